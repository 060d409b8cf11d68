"""Targets: where engines run, and the latency profilers for them.

Only ``host-cpu`` (this machine, measured) exists so far; device profiles for Jetson boards
and ARM CPUs come with the targets issue.
"""

from dfkd_edge.targets.host import HOST_TARGET, host_info, measure_interleaved

KNOWN_TARGETS = (HOST_TARGET,)

__all__ = ["HOST_TARGET", "KNOWN_TARGETS", "host_info", "measure_interleaved"]
