"""``python predict.py [overrides]``: the same command as ``volseg predict``."""

from volseg.cli.predict import main

if __name__ == "__main__":
    main()
