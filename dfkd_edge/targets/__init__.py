"""Targets: device profiles (TOML, shipped in ``profiles/``) and the latency profilers for them:
``host`` (this machine, measured), ``remote`` (a device over SSH, measured-remote) and
``estimate`` (a roofline from the profile's figures, estimated)."""

from dfkd_edge.targets.host import HOST_TARGET, host_info, measure_interleaved
from dfkd_edge.targets.profile import TargetProfile, builtin_names, list_profiles, load_profile

__all__ = ["HOST_TARGET", "TargetProfile", "builtin_names", "host_info", "list_profiles", "load_profile",
           "measure_interleaved"]
