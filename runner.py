#!/usr/bin/env python
"""ResNet-50 -> ConvNeXt roadmap runner: `python runner.py {list,run,table,plot,bench,export,predict,evaluate} --help`."""
import sys

from roadmap.cli import main

if __name__ == "__main__":
    sys.exit(main())
