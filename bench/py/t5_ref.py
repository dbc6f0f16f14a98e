"""T5 / Flan-T5 in plain PyTorch, in Hugging Face's layout and conventions: RMS layer norm without bias, unscaled
attention logits, bucketed relative position bias from the first block of each stack (bidirectional in the encoder,
causal in the decoder), relu or gated FFN (gated-gelu = gelu_new), tied head rescaled by d_model**-0.5. The reference
for retain's T5 parity tests."""
import math

import torch
import torch.nn as nn


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


ACTS = {"relu": torch.relu, "gelu": nn.functional.gelu, "gelu_new": gelu_new, "silu": nn.functional.silu}


def bucket(rel, bidirectional, num_buckets, max_distance):
    out = torch.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        out = out + (rel > 0).long() * num_buckets
        n = rel.abs()
    else:
        n = -torch.min(rel, torch.zeros_like(rel))
    max_exact = num_buckets // 2
    small = n < max_exact
    large = max_exact + (torch.log(n.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).long()
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return out + torch.where(small, n, large)


class LayerNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        var = x.to(torch.float32).pow(2).mean(-1, keepdim=True) if x.dtype in (torch.float16, torch.bfloat16) \
            else x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


class Attention(nn.Module):
    def __init__(self, c, has_bias, bidirectional):
        super().__init__()
        inner = c["num_heads"] * c["d_kv"]
        self.h, self.dkv, self.c, self.bidirectional = c["num_heads"], c["d_kv"], c, bidirectional
        self.q = nn.Linear(c["d_model"], inner, bias=False)
        self.k = nn.Linear(c["d_model"], inner, bias=False)
        self.v = nn.Linear(c["d_model"], inner, bias=False)
        self.o = nn.Linear(inner, c["d_model"], bias=False)
        if has_bias:
            self.relative_attention_bias = nn.Embedding(c.get("relative_attention_num_buckets", 32), self.h)

    def bias(self, T, S):
        ctx = torch.arange(T)[:, None]
        mem = torch.arange(S)[None, :]
        b = bucket(mem - ctx, self.bidirectional, self.c.get("relative_attention_num_buckets", 32),
                   self.c.get("relative_attention_max_distance", 128))
        return self.relative_attention_bias(b).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x, kv, bias):
        B, T, _ = x.shape
        S = kv.shape[1]
        q = self.q(x).view(B, T, self.h, self.dkv).transpose(1, 2)
        k = self.k(kv).view(B, S, self.h, self.dkv).transpose(1, 2)
        v = self.v(kv).view(B, S, self.h, self.dkv).transpose(1, 2)
        scores = q @ k.transpose(3, 2) + bias
        # HF computes this softmax in float32 (scores.float()) to protect half precision; in float64 that would
        # round the reference itself, so only half types are upcast here.
        half = scores.dtype in (torch.float16, torch.bfloat16)
        w = scores.float().softmax(-1).type_as(scores) if half else scores.softmax(-1)
        return self.o((w @ v).transpose(1, 2).reshape(B, T, -1))


class SelfLayer(nn.Module):
    def __init__(self, c, has_bias, decoder):
        super().__init__()
        self.SelfAttention = Attention(c, has_bias, not decoder)
        self.layer_norm = LayerNorm(c["d_model"], c.get("layer_norm_epsilon", 1e-6))

    def forward(self, x, bias):
        h = self.layer_norm(x)
        return x + self.SelfAttention(h, h, bias)


class CrossLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.EncDecAttention = Attention(c, False, True)
        self.layer_norm = LayerNorm(c["d_model"], c.get("layer_norm_epsilon", 1e-6))

    def forward(self, x, enc, bias):
        return x + self.EncDecAttention(self.layer_norm(x), enc, bias)


class Dense(nn.Module):
    def __init__(self, c):
        super().__init__()
        proj = c.get("feed_forward_proj", "relu")
        self.gated = proj.startswith("gated-")
        self.act = ACTS["gelu_new" if proj == "gated-gelu" else proj.split("-")[-1]]
        if self.gated:
            self.wi_0 = nn.Linear(c["d_model"], c["d_ff"], bias=False)
            self.wi_1 = nn.Linear(c["d_model"], c["d_ff"], bias=False)
        else:
            self.wi = nn.Linear(c["d_model"], c["d_ff"], bias=False)
        self.wo = nn.Linear(c["d_ff"], c["d_model"], bias=False)

    def forward(self, x):
        h = self.act(self.wi_0(x)) * self.wi_1(x) if self.gated else self.act(self.wi(x))
        return self.wo(h)


class FFLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.DenseReluDense = Dense(c)
        self.layer_norm = LayerNorm(c["d_model"], c.get("layer_norm_epsilon", 1e-6))

    def forward(self, x):
        return x + self.DenseReluDense(self.layer_norm(x))


class Block(nn.Module):
    def __init__(self, c, i, decoder):
        super().__init__()
        layers = [SelfLayer(c, i == 0, decoder)]
        if decoder:
            layers.append(CrossLayer(c))
        layers.append(FFLayer(c))
        self.layer = nn.ModuleList(layers)


class Stack(nn.Module):
    def __init__(self, c, shared, decoder):
        super().__init__()
        self.embed_tokens = shared
        n = (c.get("num_decoder_layers") or c["num_layers"]) if decoder else c["num_layers"]
        self.block = nn.ModuleList([Block(c, i, decoder) for i in range(n)])
        self.final_layer_norm = LayerNorm(c["d_model"], c.get("layer_norm_epsilon", 1e-6))
        self.decoder = decoder

    def forward(self, ids, enc=None, enc_mask=None, mask=None):
        x = self.embed_tokens(ids)
        B, T = ids.shape
        lowest = torch.finfo(x.dtype).min
        bias = self.block[0].layer[0].SelfAttention.bias(T, T)
        if self.decoder:
            causal = torch.ones(T, T, dtype=torch.bool).tril()
            bias = bias + (~causal).to(x.dtype) * lowest
        if mask is not None:
            bias = bias + (1.0 - mask[:, None, None, :].to(x.dtype)) * lowest
        cross = None
        if self.decoder:
            cross = torch.zeros(1, 1, 1, enc.shape[1], dtype=x.dtype)
            if enc_mask is not None:
                cross = cross + (1.0 - enc_mask[:, None, None, :].to(x.dtype)) * lowest
        for blk in self.block:
            x = blk.layer[0](x, bias)
            if self.decoder:
                x = blk.layer[1](x, enc, cross)
            x = blk.layer[-1](x)
        return self.final_layer_norm(x)


class T5(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.shared = nn.Embedding(c["vocab_size"], c["d_model"])
        self.encoder = Stack(c, self.shared, False)
        self.decoder = Stack(c, self.shared, True)
        self.lm_head = nn.Linear(c["d_model"], c["vocab_size"], bias=False)
        if c.get("tie_word_embeddings", True):
            self.lm_head.weight = self.shared.weight

    def forward(self, input_ids, decoder_input_ids, attention_mask=None):
        enc = self.encoder(input_ids, mask=attention_mask)
        x = self.decoder(decoder_input_ids, enc, enc_mask=attention_mask)
        if self.c.get("tie_word_embeddings", True):
            x = x * self.c["d_model"] ** -0.5
        return self.lm_head(x)


def shift_right(labels, start=0, pad=0):
    out = torch.full_like(labels, start)
    out[:, 1:] = labels[:, :-1]
    return out.masked_fill(out == -100, pad)
