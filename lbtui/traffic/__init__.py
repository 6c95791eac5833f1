"""Traffic for proving the balancer: the load simulator, its patterns and scripted scenarios."""

from lbtui.traffic.patterns import PATTERNS, Pattern, Pick, make_pattern
from lbtui.traffic.simulator import RequestSpec, SimulationResult, TargetRefused, check_target, run_simulation

__all__ = [
    "PATTERNS",
    "Pattern",
    "Pick",
    "RequestSpec",
    "SimulationResult",
    "TargetRefused",
    "check_target",
    "make_pattern",
    "run_simulation",
]
