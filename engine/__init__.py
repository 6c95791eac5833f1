"""lbtui's engine: routing policies, health, stickiness, limits and the data plane.

The engine knows nothing of the dashboard, the workers or the cloud: it publishes
events and others subscribe.
"""

from engine import _native  # first: compiled hot modules, or all from source
from engine.affinity import SessionAffinity
from engine.balancer import LoadBalancer
from engine.events import Event, EventBus
from engine.hash_policies import ConsistentHashPolicy, MaglevPolicy
from engine.hashring import ConsistentHash
from engine.health import HealthChecker
from engine.maglev import Maglev
from engine.outlier import OutlierDetector
from engine.policies import LeastConnections, LeastRequest, PeakEwma, RandomPick, RoundRobin, WeightedRoundRobin
from engine.server import AdminState, Health, Server

COMPILED = _native.MODE == "compiled"
"""Whether the data plane's hot modules run compiled (mypyc) in this process."""

__all__ = [
    "COMPILED",
    "AdminState",
    "ConsistentHash",
    "ConsistentHashPolicy",
    "Event",
    "EventBus",
    "Health",
    "HealthChecker",
    "LeastConnections",
    "LeastRequest",
    "LoadBalancer",
    "Maglev",
    "MaglevPolicy",
    "OutlierDetector",
    "PeakEwma",
    "RandomPick",
    "RoundRobin",
    "Server",
    "SessionAffinity",
    "WeightedRoundRobin",
]
