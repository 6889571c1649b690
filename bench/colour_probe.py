"""Can the starter's cached features tell an object's colour? A small probe (per-patch MLP with
attention pooling) trained on single-object training scenes, scored on held-out ones, for the
colour cells pooled to 4x4 (what a 16-token mlp projector sees), at full 7x7, and the CNN features.

    python bench/colour_probe.py ~/.cache/assistant   # after `assistant train` cached the features

Result (2026-11-28, seed 0, 2000 scenes): colour 4x4 0.72, colour 7x7 0.90, CNN 7x7 0.78.
"""

import glob
import sys

import torch
from safetensors.torch import load_file

from assistant.training import make_split
from assistant.vision.projectors import pool_patch_grid

cache_dir = sys.argv[1] if len(sys.argv) > 1 else "~/.cache/assistant"
torch.manual_seed(0)
scenes = make_split("train", 2000, seed=0)
for f in glob.glob(f"{__import__('os').path.expanduser(cache_dir)}/features/*.safetensors"):
    t = load_file(f)['features']
    if t.shape[0]==2000 and t.shape[-1]==1292: feats=t
idx = [i for i,s in enumerate(scenes) if s.kind=="single"]
names = sorted({scenes[i].objects[0].colour for i in idx}); y = torch.tensor([names.index(scenes[i].objects[0].colour) for i in idx])
n = int(len(idx)*0.8)
for label, sl, g in (("colour 4x4", slice(1280,None), 4), ("colour 7x7", slice(1280,None), 7), ("cnn 7x7", slice(0,1280), 7)):
    X = pool_patch_grid(feats[idx][..., sl], 7, g)  # [N, g*g, d]
    net = torch.nn.Sequential(torch.nn.Linear(X.shape[-1], 64), torch.nn.GELU(), torch.nn.Linear(64, 64))
    att = torch.nn.Linear(64, 1); head = torch.nn.Linear(64, len(names))
    params = [*net.parameters(), *att.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3)
    def f(X):
        h = net(X); w = att(h).softmax(1); return head((w*h).sum(1))
    for _ in range(300):
        opt.zero_grad(); torch.nn.functional.cross_entropy(f(X[:n]), y[:n]).backward(); opt.step()
    print(label, "held-out acc (per-patch MLP + attention pooling)", round(((f(X[n:])).argmax(1)==y[n:]).float().mean().item(),3))
