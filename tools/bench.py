"""Benchmark graphconv's LLVM backend beside onnxruntime (see graphconv/bench.py; same as `graphconv bench`).

    python tools/bench.py                         # the zoo at batch 1 and 8, 2 threads
    python tools/bench.py resnet50 --batch 1 --threads 2 --json
"""

import sys

from graphconv.bench import main

if __name__ == "__main__":
    sys.exit(main())
