"""The app's one interface to a balancer, embedded or remote."""

from lbtui.control.base import Control, ControlError, Disconnected, Link

__all__ = ["Control", "ControlError", "Disconnected", "Link"]
