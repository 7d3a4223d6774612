"""``python train.py [overrides]``: the same command as ``volseg train`` (`volseg.cli.train`)."""

from volseg.cli.train import main

if __name__ == "__main__":
    main()
