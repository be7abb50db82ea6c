"""The human-rated texts (parsing, the fixed split, the asset converter) and the movie-review prompts."""

import io
import tarfile

import numpy as np
import pytest
from test_tokenizer_bridge import tiny_tokenizer

from rs_jax.data import prompts, rated_text

LINES = (
    "1\t2.5\tA gorgeous, moving film.\r\n"
    "2\t-3.25\tDull and  far too long.\r\n\r\n"
    "3_1\t0\tIt opens Friday.\r\n"
)
TEMPLATE = (
    "{% for message in messages %}{{'<s>' + message['role'] + ': ' + message['content'] + '</s>'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<s>assistant: ' }}{% endif %}"
)


def test_parse_rated_lines_and_errors():
    rated = rated_text.parse_rated_lines(LINES, "toy.txt")
    assert rated.ids == ("1", "2", "3_1")
    assert rated.texts == ("A gorgeous, moving film.", "Dull and  far too long.", "It opens Friday.")
    np.testing.assert_array_equal(rated.ratings, np.array([2.5, -3.25, 0.0], np.float32))
    with pytest.raises(ValueError, match=r"toy\.txt, line 2: expected id<TAB>rating<TAB>text"):
        rated_text.parse_rated_lines("1\t1\tok\n2\tnot-a-number\ttext\n", "toy.txt")
    with pytest.raises(ValueError, match="line 1: no text after the rating"):
        rated_text.parse_rated_lines("1\t1\t \n", "toy.txt")
    with pytest.raises(ValueError, match="Unknown rated-text corpus 'imdb'"):
        rated_text.read_rated_texts("imdb")


def test_split_is_fixed_disjoint_and_complete():
    split = rated_text.split_indices(101, seed=0)
    assert [len(split[part]) for part in ("train", "validation", "test")] == [81, 10, 10]
    np.testing.assert_array_equal(np.sort(np.concatenate(list(split.values()))), np.arange(101))
    again = rated_text.split_indices(101, seed=0)
    assert all(np.array_equal(split[part], again[part]) for part in split)
    assert not np.array_equal(split["test"], rated_text.split_indices(101, seed=1)["test"])
    with pytest.raises(ValueError, match="fractions must be positive"):
        rated_text.split_indices(10, 0, (0.9, 0.2))


def test_extract_ground_truth_from_the_inner_archive(tmp_path):
    source, target = tmp_path / "source", tmp_path / "target"
    source.mkdir(), target.mkdir()
    with tarfile.open(source / "hutto_ICWSM_2014.tar.gz", "w:gz") as archive:
        for name in (*rated_text.CORPORA.values(), rated_text.README, "vader_icwsm2014_final.pdf"):
            data = LINES.encode()
            info = tarfile.TarInfo(f"hutto_ICWSM_2014/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    rated_text.extract_ground_truth(source, target)
    assert sorted(file.name for file in target.iterdir()) == sorted(
        [*rated_text.CORPORA.values(), rated_text.README]
    )
    assert rated_text.read_rated_texts("tweets", target).texts[2] == "It opens Friday."


def test_movie_review_prompts_wrap_snippet_beginnings_in_the_chat_template():
    tokenizer = tiny_tokenizer()
    with pytest.raises(ValueError, match="has no chat template"):
        prompts.movie_review_prompts(tokenizer, beginnings=["x"])
    tokenizer.chat_template = TEMPLATE
    snippets = rated_text.parse_rated_lines(LINES).texts
    texts = prompts.movie_review_prompts(tokenizer, num_words=2, beginnings=snippets)
    assert texts == [
        f"<s>user: Generate a movie review.</s><s>assistant: {start}"
        for start in ("A gorgeous,", "Dull and", "It opens")
    ]
    chosen = prompts.movie_review_prompts(tokenizer, num_words=1, count=2, seed=3, beginnings=snippets)
    assert len(chosen) == 2 and set(chosen) < {text.rsplit(" ", 1)[0] for text in texts}
    ids, mask = prompts.tokenize_prompts(texts, tokenizer, 24)
    assert ids.shape == (3, 24) and mask[:, -1].all()
    with pytest.raises(ValueError, match=r"count must be in 1\.\.3"):
        prompts.movie_review_prompts(tokenizer, count=4, beginnings=snippets)
