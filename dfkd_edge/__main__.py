"""``python -m dfkd_edge`` (and ``torchrun ... -m dfkd_edge convert ...``): the dfkd-edge CLI."""

from dfkd_edge.cli import main

if __name__ == "__main__":
    main()
