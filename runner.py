#!/usr/bin/env python
"""ResNet-50 -> ConvNeXt roadmap runner: `python runner.py {list,run,table,plot,bench,export,predict,evaluate} --help`."""
import sys

if __name__ == "__main__":
    try:
        from roadmap.cli import main   # Ctrl-C here too ends quietly: main guards everything after
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(main())
