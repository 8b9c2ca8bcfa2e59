#!/usr/bin/env python3
"""Download the evaluation files suf-run reads, in the layout of ../shared/data, and verify them.

For users with internet access (the build machines have none: there, ../shared/data already
holds these exact files; see its PROVENANCE.md). Every file is checked against the sha256 of
the copy the Table 4 configs were run on, so a changed upstream file is an error, not a
silent difference.

    python3 scripts/fetch_data.py --out ../shared/data          # all four datasets
    python3 scripts/fetch_data.py --out data --only sst2,lambada

Sources (the files as distributed, not re-serialised):
- SST-2, QNLI: the GLUE zips (dl.fbaipublicfiles.com/glue/data/), dev.tsv inside.
- MRPC: rebuilt exactly as GLUE's download_glue_data.py does, from MSR's
  msr_paraphrase_train.txt and GLUE's mrpc_dev_ids.tsv.
- LAMBADA (OpenAI variant): openaipublic's lambada_test.jsonl (the file lm-eval pins).
"""

import argparse
import hashlib
import io
import os
import sys
import urllib.request
import zipfile

GLUE = "https://dl.fbaipublicfiles.com/glue/data"
EXPECTED = {
    "glue-sst2/dev.tsv": "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0",
    "glue-qnli/dev.tsv": "763e95932dd3578251de71582e06829015f9c3815a518c751dc537219b159de4",
    "glue-mrpc/dev.tsv": "81c8a1a9e1dfe461dd2c1a4f98f43fe18bece44d2bf9e3d0b245b88e5aa5eaf7",
    "lambada_openai/lambada_test.jsonl": "4aa8d02cd17c719165fc8a7887fddd641f43fcafa4b1c806ca8abc31fabdb226",
}


def get(url):
    print(f"fetching {url}", file=sys.stderr)
    with urllib.request.urlopen(url, timeout=120) as r:
        return r.read()


def from_zip(url, member):
    with zipfile.ZipFile(io.BytesIO(get(url))) as z:
        return z.read(member)


def mrpc_dev():
    """GLUE's MRPC dev.tsv: rows of MSR's train file whose (#1 ID, #2 ID) pair is in dev_ids."""
    train = get("https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_train.txt").decode("utf-8-sig")
    ids = get(f"{GLUE}/mrpc_dev_ids.tsv").decode("utf-8")
    dev_ids = {tuple(line.strip().split("\t")) for line in ids.splitlines() if line.strip()}
    lines = train.splitlines()
    out = ["\ufeff" + lines[0]]
    for line in lines[1:]:
        fields = line.split("\t")
        if (fields[1], fields[2]) in dev_ids:
            out.append(line)
    return ("\n".join(out) + "\n").encode("utf-8")


FETCHERS = {
    "sst2": ("glue-sst2/dev.tsv", lambda: from_zip(f"{GLUE}/SST-2.zip", "SST-2/dev.tsv")),
    "qnli": ("glue-qnli/dev.tsv", lambda: from_zip(f"{GLUE}/QNLIv2.zip", "QNLI/dev.tsv")),
    "mrpc": ("glue-mrpc/dev.tsv", mrpc_dev),
    "lambada": (
        "lambada_openai/lambada_test.jsonl",
        lambda: get("https://openaipublic.blob.core.windows.net/gpt-2/data/lambada_test.jsonl"),
    ),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory to write into (layout of ../shared/data)")
    ap.add_argument("--only", help="comma-separated subset of: " + ",".join(FETCHERS))
    ap.add_argument("--no-verify", action="store_true", help="keep files whose sha256 differs (reported)")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(FETCHERS)
    failed = False
    for name in names:
        if name not in FETCHERS:
            sys.exit(f"fetch_data: unknown dataset {name!r} (choose from {', '.join(FETCHERS)})")
        rel, fetch = FETCHERS[name]
        data = fetch()
        digest = hashlib.sha256(data).hexdigest()
        if digest != EXPECTED[rel]:
            print(f"fetch_data: {rel}: sha256 {digest} differs from the pinned {EXPECTED[rel]}", file=sys.stderr)
            failed = True
            if not args.no_verify:
                continue
        path = os.path.join(args.out, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        print(f"wrote {path} ({len(data)} bytes, sha256 {digest})", file=sys.stderr)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
