"""Write tiny random Grounding DINO and SAM folders, for trying `occo masks gen` offline.

The masks they make mean nothing (random weights); they exercise the whole pipeline
(tokenizer, processors, batching, the store) in seconds on a CPU, with no model hub.
The same builders make the test suite's models (tests/masks_tiny.py).

    python scripts/make_tiny_models.py .            # -> ./tiny-gdino, ./tiny-sam
    occo masks gen msrs --out masks-tiny.h5 --detector ./tiny-gdino --segmenter ./tiny-sam
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the clone's tests/ package


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where tiny-gdino/ and tiny-sam/ go")
    args = parser.parse_args()
    from tests.masks_tiny import save_grounding_dino, save_sam

    for name in ("tiny-gdino", "tiny-sam"):
        if (args.folder / name).exists():
            sys.exit(f"error: {args.folder / name} exists; remove it or choose another folder")
    args.folder.mkdir(parents=True, exist_ok=True)
    detector = save_grounding_dino(args.folder / "tiny-gdino")
    segmenter = save_sam(args.folder / "tiny-sam")
    print(f"wrote {detector} and {segmenter}")


if __name__ == "__main__":
    main()
