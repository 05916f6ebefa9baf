"""An independent description of the released checkpoint's layout: its module paths, key names and shapes.

Written from the legacy code's module paths, not from our model, so the tests can check the mapping both ways.
"""

from collections import OrderedDict

import torch


def _transformer(prefix, d, ff, enc_layers, dec_layers):
    keys = OrderedDict()

    def attn(p):
        keys[p + "in_proj_weight"] = (3 * d, d)
        keys[p + "in_proj_bias"] = (3 * d,)
        keys[p + "out_proj.weight"] = (d, d)
        keys[p + "out_proj.bias"] = (d,)

    def ffn(p):
        keys[p + "linear1.weight"] = (ff, d)
        keys[p + "linear1.bias"] = (ff,)
        keys[p + "linear2.weight"] = (d, ff)
        keys[p + "linear2.bias"] = (d,)

    for i in range(enc_layers):
        p = f"{prefix}encoder.layers.{i}."
        attn(p + "self_attn.")
        ffn(p)
        for n in (1, 2):
            keys[p + f"norm{n}.weight"] = (d,)
            keys[p + f"norm{n}.bias"] = (d,)
    keys[prefix + "encoder.norm.weight"] = (d,)
    keys[prefix + "encoder.norm.bias"] = (d,)
    for i in range(dec_layers):
        p = f"{prefix}decoder.layers.{i}."
        attn(p + "self_attn.")
        attn(p + "multihead_attn.")
        ffn(p)
        for n in (1, 2, 3):
            keys[p + f"norm{n}.weight"] = (d,)
            keys[p + f"norm{n}.bias"] = (d,)
    keys[prefix + "decoder.norm.weight"] = (d,)
    keys[prefix + "decoder.norm.bias"] = (d,)
    return keys


def official_layout(
    *, hidden=4096, layers=32, vocab=32038, r=32, enc_dim=1024, d=512, ff=2048, enc_layers=4, dec_layers=4,
    outs=(("gen_text_hidden_fcs", 77, 768), ("gen_text_hidden_fcs_video", 77, 1024), ("gen_text_hidden_fcs_audio", 1, 512)),
    lora_targets=("q_proj", "k_proj", "v_proj", "o_proj"), adapter_name=True,
):
    """key -> shape of every tensor in the official pytorch_model.pt (defaults: the 7B release)."""
    keys = OrderedDict()
    keys["llama_proj.weight"] = (hidden, enc_dim)
    keys["llama_proj.bias"] = (hidden,)
    base = "llama_model.base_model.model."
    keys[base + "model.embed_tokens.weight"] = (vocab, hidden)
    ad = ".default" if adapter_name else ""
    for i in range(layers):
        for t in lora_targets:
            p = f"{base}model.layers.{i}.self_attn.{t}."
            keys[p + f"lora_A{ad}.weight"] = (r, hidden)
            keys[p + f"lora_B{ad}.weight"] = (hidden, r)
    keys[base + "lm_head.weight"] = (vocab, hidden)
    for name, q, dim in outs:
        p = f"{name}.0."
        keys[p + "fc.weight"] = (d, hidden)
        keys[p + "fc.bias"] = (d,)
        keys.update(_transformer(p + "tfm.", d, ff, enc_layers, dec_layers))
        keys[p + "model.weight"] = (dim, d)
        keys[p + "model.bias"] = (dim,)
        keys[p + "query_embs"] = (1, q, d)
    return keys


def tiny_official_layout(config, **kw):
    """The official layout at the dimensions of a (tiny) NextGPTConfig."""
    op = config.output_projectors
    first = op["image"]
    return official_layout(
        hidden=config.llm.hidden_size, layers=config.llm.llama["num_hidden_layers"], vocab=config.llm.vocab_size,
        r=config.lora.r, enc_dim=config.encoder.embed_dim, d=first.d_model, ff=first.dim_feedforward,
        enc_layers=first.num_encoder_layers, dec_layers=first.num_decoder_layers,
        outs=(("gen_text_hidden_fcs", op["image"].num_queries, op["image"].out_dim),
              ("gen_text_hidden_fcs_video", op["video"].num_queries, op["video"].out_dim),
              ("gen_text_hidden_fcs_audio", op["audio"].num_queries, op["audio"].out_dim)),
        lora_targets=tuple(config.lora.target_modules), **kw,
    )


def write_official_checkpoint(path, layout, seed=0, dtype=torch.float16, drop_prefix=None):
    """torch.save an OrderedDict in the official layout, random values, like the released fp16 file."""
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict(
        (k, (torch.randn(shape, generator=g) * 0.02).to(dtype))
        for k, shape in layout.items()
        if not (drop_prefix and k.startswith(drop_prefix))
    )
    torch.save(sd, path)
    return sd
