"""``python -m phenoprint`` (and ``torchrun -m phenoprint``) runs the command-line interface."""

from phenoprint.cli import entry

if __name__ == "__main__":
    entry()
