"""TensorFlow's BasicLSTMCell and the ml5 charRNN language model, written out in plain PyTorch with TensorFlow's
variable layout: kernel [input + hidden, 4 * hidden] applied to concat(x, h), gate columns i, j (candidate), f, o,
a constant forget bias added to f, logits = h @ softmax_w + softmax_b. The reference for retain's char-LSTM tests."""
import torch


def basic_lstm_cell(x, h, c, kernel, bias, forget_bias=1.0):
    gates = torch.cat([x, h], dim=1) @ kernel + bias
    i, j, f, o = gates.chunk(4, dim=1)
    c = c * torch.sigmoid(f + forget_bias) + torch.sigmoid(i) * torch.tanh(j)
    h = torch.tanh(c) * torch.sigmoid(o)
    return h, c


def char_lstm(W, ids, num_layers, forget_bias=1.0):
    """W: TensorFlow names with '/' (or '.') separators -> tensors; ids [B, T] -> logits [B, T, V]."""
    get = lambda name: W[name] if name in W else W[name.replace("/", ".")]
    x = get("embedding")[ids]
    B, T, _ = x.shape
    for layer in range(num_layers):
        kernel = get(f"rnnlm/multi_rnn_cell/cell_{layer}/basic_lstm_cell/weights")
        bias = get(f"rnnlm/multi_rnn_cell/cell_{layer}/basic_lstm_cell/biases")
        H = kernel.shape[1] // 4
        h = torch.zeros(B, H, dtype=x.dtype)
        c = torch.zeros(B, H, dtype=x.dtype)
        outs = []
        for t in range(T):
            h, c = basic_lstm_cell(x[:, t], h, c, kernel, bias, forget_bias)
            outs.append(h)
        x = torch.stack(outs, dim=1)
    return x @ get("rnnlm/softmax_w") + get("rnnlm/softmax_b")
