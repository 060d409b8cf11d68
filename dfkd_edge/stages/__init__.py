"""The stages of a run, one module each (docs/ARCHITECTURE.md); dfkd_edge.flows puts them in a row
and dfkd_edge.runner runs them. ``files`` names the files they hand each other."""
