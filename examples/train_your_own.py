"""Train a quantized network in your own script, then hand it to qnnfab.

    python examples/train_your_own.py [--epochs N] [--out digits.qnn]

A small MLP from qnnfab's quantized layers (ternary weights, 2-bit activations), trained on the
8x8 digits with plain torch, exported to the network IR; the integer golden model (the spec)
must agree with the float model on every test image. Then: `qnnfab sim digits.qnn`.
"""
import argparse

import numpy as np
import torch

from qnnfab import ir
from qnnfab.model.data import load_dataset
from qnnfab.model.export import export
from qnnfab.model.layers import QuantMLP
from qnnfab.spec import golden

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=30)
parser.add_argument("--out", default="digits.qnn")
args = parser.parse_args()

torch.manual_seed(0)
ds = load_dataset("digits")  # integer input codes 0..16 (ds.input_bits = 5), 70/10/20 split
model = QuantMLP([ds.n_features, 128, ds.n_classes], input_bits=ds.input_bits,
                 weight_kinds="ternary", act_bits=2)
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
x, y = torch.tensor(ds.x_train, dtype=torch.float32), torch.tensor(ds.y_train)
for epoch in range(args.epochs):
    model.train()
    for batch in torch.randperm(len(y)).split(64):
        loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.constrain_()  # latent weights back to [-1, 1], where the straight-through works

model.eval()
with torch.no_grad():
    float_pred = model(torch.tensor(ds.x_test, dtype=torch.float32)).argmax(1).numpy()
# meta["data"] lets `qnnfab sim` / `qnnfab run` take their vectors from the test split.
network = export(model, meta={"data": {"name": ds.name, "split_seed": ds.seed}},
                 classes=list(ds.classes))
int_pred = golden.forward(network, ds.x_test).classes
print(f"test accuracy: float {np.mean(float_pred == ds.y_test):.2%}, integer "
      f"{np.mean(int_pred == ds.y_test):.2%}, agreement {np.mean(float_pred == int_pred):.2%}")
ir.save(network, args.out)
print(f"wrote {args.out} ({network.summary()}); next: qnnfab sim {args.out}")
