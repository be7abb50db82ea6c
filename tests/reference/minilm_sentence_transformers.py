"""Writes minilm_sentence_transformers.json: sentence-transformers' all-MiniLM-L6-v2 on the texts
of tests/test_reward_models.py, the reference that rs_jax's torch-free MiniLM is checked against.

Runs where sentence-transformers and torch are installed (rs_jax installs neither), reading the
texts the JSON already holds and the ``minilm`` asset directory of rs_jax's cache::

    python -m venv venv-st && venv-st/bin/pip install "sentence-transformers>=3,<6" "transformers>=4.57,<5"
    venv-st/bin/python tests/reference/minilm_sentence_transformers.py ~/.cache/rs_jax/minilm-*/

The file holds the texts (the two target descriptions, then the corpus sentences), the unit-norm
embeddings of the descriptions and of the first ``EMBEDDED`` sentences, and the cosine
similarity of every sentence to each description.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os

import numpy as np

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "minilm_sentence_transformers.json")
EMBEDDED = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="the minilm asset directory (python -m rs_jax.assets fetch minilm)")
    args = parser.parse_args()
    import sentence_transformers

    with open(PATH) as handle:
        reference = json.load(handle)
    texts = reference["texts"]
    model = sentence_transformers.SentenceTransformer(args.model_dir, device="cpu")
    embeddings = model.encode(texts, normalize_embeddings=True).astype(np.float64)
    descriptions, sentences = embeddings[:2], embeddings[2:]
    reference.update(
        sentence_transformers=importlib.metadata.version("sentence-transformers"),
        torch=importlib.metadata.version("torch"),
        description_embeddings=np.round(descriptions, 7).tolist(),
        sentence_embeddings=np.round(sentences[:EMBEDDED], 7).tolist(),
        similarities=np.round(sentences @ descriptions.T, 7).tolist(),
    )
    with open(PATH, "w") as handle:
        json.dump(reference, handle, indent=1)


if __name__ == "__main__":
    main()
