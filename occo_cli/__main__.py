"""``python -m occo_cli`` (what torchrun launches: ``torchrun ... -m occo_cli train ...``)."""

from occo_cli.app import main

if __name__ == "__main__":
    main()
