"""voice-train: turn one long voice recording into a fine-tuned MusicGen model.

The package holds the logic; the Snakemake rule scripts in ``scripts/`` only wire these
functions to files. Light modules (audio I/O, preflight, prepare, report) never import
torch or audiocraft.
"""

__version__ = "0.1.0"
