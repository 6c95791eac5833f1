"""lbtui's data plane: an HTTP/1.1 reverse proxy and a TCP proxy on asyncio Protocols.

Built on llhttp (httptools) and meant to run on uvloop; the caller installs the loop.
"""

from engine.proxy.http import HttpProxy
from engine.proxy.settings import ProxySettings
from engine.proxy.tcp import TcpProxy
from engine.proxy.tls import self_signed_pair, server_context

__all__ = ["HttpProxy", "ProxySettings", "TcpProxy", "self_signed_pair", "server_context"]
