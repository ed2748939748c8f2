"""Texts per second: edgecnn's pure-Python tokenizer against Keras' TextVectorization, on both corpora.

Usage: python benchmarks/tokenizer_throughput.py [--repeat 3] [--sequence-length 400]

Both tokenizers get the same vocabulary (adapted by TextVectorization on the training split) and the same texts;
the ids are checked to be identical before anything is timed. TextVectorization is timed as it is used in
practice: called eagerly on batches of 512 strings.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sequence-length", type=int, default=400)
    parser.add_argument("--vocab-size", type=int, default=10000)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    from edgecnn.runtime.text import Tokenizer
    from edgecnn.train.datasets import load_dataset

    for name in ("bbc-news", "tweets"):
        splits = load_dataset(name, seed=0)
        texts = list(splits.x_train) + list(splits.x_val) + list(splits.x_test)
        layer = keras.layers.TextVectorization(max_tokens=args.vocab_size, output_mode="int",
                                               output_sequence_length=args.sequence_length)
        layer.adapt(tf.data.Dataset.from_tensor_slices(list(splits.x_train)).batch(512))
        tokenizer = Tokenizer([str(t) for t in layer.get_vocabulary()], args.sequence_length)
        batches = [texts[i:i + 512] for i in range(0, len(texts), 512)]

        def keras_ids(layer=layer, batches=batches):
            return np.concatenate([layer(tf.constant(b)).numpy() for b in batches])

        def our_ids(tokenizer=tokenizer, texts=texts):
            return tokenizer.encode(texts)

        assert (keras_ids() == our_ids()).all(), "ids differ: run tests/test_text_tokenizer.py"
        t_keras, t_ours = best_of(args.repeat, keras_ids), best_of(args.repeat, our_ids)
        single = best_of(args.repeat, lambda tok=tokenizer, few=texts[:500]: [tok.encode(t) for t in few]) / 500
        print(f"{name}: {len(texts)} texts, sequence length {args.sequence_length}: "
              f"TextVectorization {len(texts) / t_keras:,.0f} texts/s, edgecnn {len(texts) / t_ours:,.0f} texts/s "
              f"({t_keras / t_ours:.1f}x); one text at a time {single * 1e6:.0f} us/text")
    huge = "The quick brown fox jumps over the lazy dog. " * 230_000  # ~10 MB
    t_huge = best_of(args.repeat, lambda: tokenizer.encode(huge))
    print(f"one {len(huge) / 1e6:.1f} MB text: {t_huge * 1e3:.2f} ms (truncated at {args.sequence_length} tokens)")


if __name__ == "__main__":
    main()
