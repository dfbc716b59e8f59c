"""A seeded synthetic prompt corpus with planted near-duplicates and their ground truth
(``bench/dedup_bench.py`` and the tests' planted-corpus check).

* vocabulary: ``vocabulary_size`` (30,000) distinct pseudo-words of 1-5 syllables (2-16
  letters), ranked mostly shortest-first (frequent words are short, as in natural
  language), word frequency ``rank ** -zipf_exponent`` (1.07);
* originals: 10-60 words (uniform), drawn i.i.d. from the Zipf law, sentence case, ending
  in ``.`` (70%) or ``?``;
* near-duplicates (10%): a random original with 1 or 2 (50/50) word edits at distinct
  positions, each a substitution by a different word, an insertion next to the position or
  a deletion (uniform); new words follow the same Zipf law;
* exact copies (2%) of a random original; rows shuffled.

Built with numpy and Arrow (no per-prompt Python): 400,000 prompts in a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SEED = 20240607
NEAR_DUPLICATE_SHARE = 0.10
EXACT_COPY_SHARE = 0.02
LENGTH_BANDS = ((10, 19), (20, 39), (40, 60))  # by the original's word count

_ONSETS = ["", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "y", "z",
           "bl", "br", "ch", "cl", "cr", "dr", "fl", "fr", "gl", "gr", "kn", "ph", "pl", "pr", "qu", "sc", "sh",
           "sk", "sl", "sm", "sn", "sp", "st", "sw", "th", "tr", "wh", "str"]
_VOWELS = ["a", "e", "i", "o", "u", "y", "ai", "au", "ea", "ee", "ie", "io", "oa", "oo", "ou", "ue"]
_CODAS = ["", "", "", "b", "ck", "d", "f", "g", "k", "l", "ll", "m", "n", "nd", "ng", "nt", "p", "r", "rd",
          "rk", "rn", "s", "ss", "st", "t", "th", "x"]
_SUBSTITUTE, _INSERT, _DELETE = 0, 1, 2


@dataclass(frozen=True)
class Corpus:
    texts: list[str]
    family: np.ndarray  # the original's id per row; its copies share it
    source: np.ndarray  # row of the original a copy was made from; -1 for originals
    edits: np.ndarray   # -1 original, 0 exact copy, 1 or 2 word edits
    length: np.ndarray  # words per row

    def planted_pairs(self) -> np.ndarray:
        """(original row, copy row) of every planted copy, int64 (k, 2)."""
        copies = np.flatnonzero(self.source >= 0)
        return np.stack((self.source[copies], copies), axis=1)

    def same_family(self, pairs: np.ndarray) -> np.ndarray:
        """Per pair: both rows come from one original (a copy-copy pair counts)."""
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        return self.family[pairs[:, 0]] == self.family[pairs[:, 1]]

    def head(self, n: int) -> Corpus:
        """The first ``n`` rows; a copy whose original is cut off counts as an original."""
        orphan = self.source[:n] >= n
        return Corpus(self.texts[:n], self.family[:n], np.where(orphan, -1, self.source[:n]),
                      np.where(orphan, -1, self.edits[:n]), self.length[:n])


def planted_recall(corpus: Corpus, pairs: np.ndarray) -> dict[str, float | int]:
    """Share of planted (original, copy) pairs among ``pairs`` (sorted (i, j), i < j): per
    edit count, per length band of the original (1-2-word edits), and over all 1-2-word
    edits; precision = share of ``pairs`` inside one family (on this corpus no unrelated
    pair is within 2 word edits, so an unrelated pair is a false positive)."""
    n = len(corpus.texts)
    planted = corpus.planted_pairs()
    found = np.isin(np.minimum(planted[:, 0], planted[:, 1]) * n + np.maximum(planted[:, 0], planted[:, 1]),
                    pairs[:, 0] * n + pairs[:, 1])
    edits, length = corpus.edits[planted[:, 1]], corpus.length[planted[:, 0]]
    near = edits > 0
    result: dict[str, float | int] = {f"recall_{e}_edit": float(found[edits == e].mean()) for e in (0, 1, 2)}
    result.update({f"recall_{low}_{high}_words": float(found[near & (length >= low) & (length <= high)].mean())
                   for low, high in LENGTH_BANDS})
    related = corpus.same_family(pairs)
    result.update({"recall_1_2_edits": float(found[near].mean()), "pairs": len(pairs),
                   "unrelated_pairs": int((~related).sum()), "precision": float(related.mean()) if len(pairs) else 1.0})
    return result


def make_vocabulary(rng: np.random.Generator, size: int) -> list[str]:
    """``size`` distinct pseudo-words in Zipf rank order: shorter words tend to rank first."""
    words: dict[str, None] = {}
    while len(words) < size:
        syllables = rng.choice(np.arange(1, 6), size=4 * (size - len(words)) + 64, p=[0.22, 0.36, 0.26, 0.12, 0.04])
        parts = rng.integers(0, [len(_ONSETS), len(_VOWELS), len(_CODAS)], size=(int(syllables.sum()), 3))
        syllable_text = [_ONSETS[a] + _VOWELS[b] + _CODAS[c] for a, b, c in parts.tolist()]
        for start, count in zip(np.cumsum(syllables) - syllables, syllables.tolist()):
            word = "".join(syllable_text[start:start + count])
            if 2 <= len(word) <= 16:
                words[word] = None
                if len(words) == size:
                    break
    vocabulary = np.array(list(words), dtype=object)
    lengths = np.fromiter(map(len, vocabulary), dtype=np.float64, count=size)
    return vocabulary[np.argsort(lengths + rng.normal(0.0, 2.5, size), kind="stable")].tolist()


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ranges ``[start, start + length)`` concatenated: flat index, range, and offset in it."""
    owner = np.repeat(np.arange(len(lengths)), lengths)
    offset = np.arange(owner.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + offset, owner, offset


def make_corpus(n: int, seed: int = SEED, vocabulary_size: int = 30_000, zipf_exponent: float = 1.07) -> Corpus:
    rng = np.random.default_rng(seed)
    vocabulary = make_vocabulary(rng, vocabulary_size)
    cumulative = np.cumsum(1.0 / np.arange(1, vocabulary_size + 1) ** zipf_exponent)
    cumulative /= cumulative[-1]

    def draw(size: int) -> np.ndarray:
        return np.minimum(np.searchsorted(cumulative, rng.random(size), "right"), vocabulary_size - 1)

    n_near, n_exact = int(n * NEAR_DUPLICATE_SHARE), int(n * EXACT_COPY_SHARE)
    n_original = n - n_near - n_exact
    lengths = rng.integers(10, 61, n_original)
    starts = np.cumsum(lengths) - lengths
    words = draw(int(lengths.sum()))
    source = rng.integers(n_original, size=n_near + n_exact)
    near_source, n_edits = source[:n_near], rng.integers(1, 3, n_near)

    # Near-duplicates: the source's words, then up to two edits at distinct positions.
    copy_lengths = lengths[near_source]
    copy_index, copy_of, copy_position = _ranges(starts[near_source], copy_lengths)
    copy_words = words[copy_index]
    twice = np.flatnonzero(n_edits == 2)
    first_position = rng.integers(copy_lengths)
    second_position = rng.integers(copy_lengths[twice] - 1)
    second_position += second_position >= first_position[twice]
    edited = np.concatenate((np.arange(n_near), twice))
    position = np.concatenate((first_position, second_position))
    kind = rng.integers(3, size=edited.size)
    new_word = draw(edited.size)
    at = (np.cumsum(copy_lengths) - copy_lengths)[edited] + position  # flat index of the edited word
    while np.any(unchanged := (kind == _SUBSTITUTE) & (new_word == copy_words[at])):
        new_word[unchanged] = draw(int(unchanged.sum()))
    substituted = kind == _SUBSTITUTE
    copy_words[at[substituted]] = new_word[substituted]
    kept = np.ones(copy_words.size, dtype=bool)
    kept[at[kind == _DELETE]] = False
    inserted = kind == _INSERT
    # Order key: word p at 2p + 1, an insertion just before (2p) or after (2p + 2) it.
    owner = np.concatenate((copy_of[kept], edited[inserted]))
    order_key = np.concatenate((2 * copy_position[kept] + 1,
                                2 * position[inserted] + 2 * rng.integers(2, size=int(inserted.sum()))))
    near_words = np.concatenate((copy_words[kept], new_word[inserted]))[np.lexsort((order_key, owner))]
    near_lengths = np.bincount(owner, minlength=n_near)

    exact_index, _, _ = _ranges(starts[source[n_near:]], lengths[source[n_near:]])
    all_words = np.concatenate((words, near_words, words[exact_index]))
    all_lengths = np.concatenate((lengths, near_lengths, lengths[source[n_near:]]))
    origin = np.concatenate((np.arange(n_original), source))  # each prompt's original
    ending = np.where(rng.random(n_original) < 0.3, "?", ".")[origin]
    sentences = pc.binary_join(pa.LargeListArray.from_arrays(
        pa.array(np.concatenate(([0], np.cumsum(all_lengths))), pa.int64()),
        pa.array(vocabulary, pa.large_string()).take(pa.array(all_words))), pa.scalar(" ", pa.large_string()))
    texts = pc.binary_join_element_wise(pc.utf8_capitalize(sentences), pa.array(ending, pa.large_string()), pa.scalar("", pa.large_string()))

    shuffle = rng.permutation(n)
    new_row = np.empty(n, dtype=np.int64)
    new_row[shuffle] = np.arange(n)
    source_row = np.concatenate((np.full(n_original, -1), new_row[source]))
    edits = np.concatenate((np.full(n_original, -1), n_edits, np.zeros(n_exact, dtype=np.int64)))
    return Corpus(texts=texts.take(pa.array(shuffle)).to_pylist(), family=origin[shuffle],
                  source=source_row[shuffle], edits=edits[shuffle], length=all_lengths[shuffle])
