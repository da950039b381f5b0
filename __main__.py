"""``python -m occo`` (what torchrun launches: ``torchrun ... -m occo train ...``)."""

from occo.cli.app import main

if __name__ == "__main__":
    main()
