"""Shared by the scripts that combine JSON reports into results/ tables: one-line errors
naming the script, reading a report, and writing a file atomically (temp + rename)."""
import json
import os
import sys


def fail(msg):
    sys.exit(f"{os.path.basename(sys.argv[0])}: {msg}")


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read {path}: {e}")


def write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
