"""Text encoders: the offline builtin one and Hugging Face encoders from a local folder."""

import pytest
import torch

from boltzformer import build_model
from boltzformer.modeling.text_encoder import HashTokenizer, build_text_encoder


def _builtin(**kw):
    args = dict(out_dim=32, trainable=True, max_tokens=8, width=32, layers=1, vocab_size=512)
    args.update(kw)
    return build_text_encoder("builtin", **args)


def test_tokenizer_is_stable_and_case_insensitive():
    tok = HashTokenizer(vocab_size=1000)
    assert tok.tokenize("Nodule in lung CT") == tok.tokenize("nodule in LUNG ct")
    assert tok.tokenize("left kidney") != tok.tokenize("right kidney")
    ids, pad = tok(["a b c", "a"])
    assert ids.shape == (2, 3) and pad.tolist() == [[False] * 3, [False, True, True]]


def test_empty_prompt_is_a_clear_error():
    enc = _builtin()
    with pytest.raises(ValueError, match="prompt 2 of 2 is empty"):
        enc(["nodule in lung CT", "   "])
    with pytest.raises(TypeError, match="list of strings"):
        enc("nodule in lung CT")


def test_overlong_prompt_is_truncated_with_a_warning():
    enc = _builtin()
    with pytest.warns(UserWarning, match="prompt 0 has 12 tokens; only the first 8"):
        out = enc([" ".join(["word"] * 12)])
    assert out.tokens.shape == (1, 8, 32)


@pytest.fixture(scope="module")
def local_bert(tmp_path_factory):
    """A tiny BERT written to disk: stands in for BiomedBERT without any download."""
    from transformers import BertConfig, BertModel, BertTokenizer

    path = tmp_path_factory.mktemp("bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "nodule", "in", "lung", "ct",
             "left", "right", "kidney", "mri", "liver", "tumor"]
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(str(path / "vocab.txt"), model_max_length=16).save_pretrained(path)
    cfg = BertConfig(vocab_size=len(words), hidden_size=24, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(path)
    return path


def test_hugging_face_encoder_from_a_local_folder(local_bert):
    enc = build_text_encoder(str(local_bert), out_dim=32, trainable=True, max_tokens=77,
                             width=0, layers=0, vocab_size=0)
    out = enc(["nodule in lung ct", "left kidney in mri"])
    assert out.tokens.shape[0] == 2 and out.tokens.shape[2] == 32
    assert out.padding.dtype == torch.bool
    assert enc.encoder.max_tokens == 16  # the tokenizer's limit wins over 77
    with pytest.warns(UserWarning, match="only the first 16"):
        enc([" ".join(["lung"] * 30)])


def test_frozen_encoder_gets_no_gradient_but_its_projection_does(local_bert):
    enc = build_text_encoder(str(local_bert), out_dim=8, trainable=False, max_tokens=77,
                             width=0, layers=0, vocab_size=0).train()
    assert not enc.encoder.model.training  # frozen encoders stay in eval mode
    enc(["liver tumor in ct"]).tokens.sum().backward()
    assert all(p.grad is None for p in enc.encoder.parameters())
    assert enc.proj.weight.grad is not None


def test_model_with_a_hugging_face_text_encoder_round_trips(local_bert, tmp_path):
    from boltzformer import BoltzFormer

    torch.manual_seed(0)
    model = build_model("tiny", image_size=64, text_encoder=str(local_bert)).eval()
    model.save_pretrained(tmp_path)
    restored = BoltzFormer.from_pretrained(tmp_path).eval()
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        a = model(x, ["nodule in lung ct"], generator=torch.Generator().manual_seed(0))
        b = restored(x, ["nodule in lung ct"], generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.logits, b.logits)


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="not a timm model"):
        build_model("tiny", backbone="no_such_net")


def test_label_encoder_reads_names_and_canonical_prompts_and_refuses_others():
    enc = build_text_encoder("labels", out_dim=16, trainable=True, max_tokens=8, width=8,
                             layers=1, vocab_size=8, labels=("liver", "liver tumor", "nodule"))
    assert enc.labels == ("liver", "liver tumor", "nodule")
    out = enc(["nodule", "liver tumor in abdomen CT", "liver in abdomen MRI", "liver"])
    assert out.tokens.shape == (4, 1, 16) and not out.padding.any()
    tokens = out.tokens.detach()
    assert torch.equal(tokens[2], tokens[3])  # a label and its canonical prompt: one token
    assert not torch.allclose(tokens[1], tokens[2])  # the longest fitting label wins
    with pytest.raises(ValueError, match=r"unknown label 'a small round lesion'.*liver, liver "
                                         r"tumor, nodule"):
        enc(["a small round lesion"])
    with pytest.raises(ValueError, match="needs text_labels"):
        build_text_encoder("labels", out_dim=16, trainable=True, max_tokens=8, width=8,
                           layers=1, vocab_size=8)


def test_label_model_reads_targets_and_round_trips_its_vocabulary(tmp_path, small_model):
    torch.manual_seed(0)
    model = build_model("tiny", **small_model, text_encoder="labels",
                        text_labels=["kidney", "nodule"]).eval()
    images = torch.rand(1, 3, 64, 64) * 255
    generator = torch.Generator().manual_seed(0)
    by_target = model(images, ["a sentence the model cannot read"], targets=["nodule"],
                      generator=generator).logits
    by_prompt = model(images, ["nodule in chest CT"],
                      generator=generator.manual_seed(0)).logits
    assert torch.equal(by_target, by_prompt)  # targets replace the prompt

    model.save_pretrained(tmp_path / "m")
    again = type(model).from_pretrained(tmp_path / "m").eval()
    assert again.config.text_labels == ("kidney", "nodule")
    assert torch.equal(again(images, ["nodule"], generator=generator.manual_seed(0)).logits,
                       by_prompt)
    with pytest.raises(ValueError, match="unknown label 'liver'"):
        again(images, ["liver"])


def test_builtin_encoder_without_transformer_layers():
    enc = _builtin(layers=0)
    out = enc(["nodule in lung CT", "liver"])
    assert out.tokens.shape == (2, 4, 32) and out.padding[1].tolist() == [False, True, True, True]
