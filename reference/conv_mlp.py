"""A straightforward ConvMLP classifier, written from
``docs/conv_mlp.md`` in the authors' layout (NCHW convolutions, NHWC
Conv-MLP stages, a permute around every spatial op) with the released
checkpoints' parameter names.

It is the equivalence oracle of the tests: ``dense_maps`` returns the four
maps of the authors' detection/segmentation wrapper, which mmhire's
``ConvMLP`` must reproduce from the same state dict. No attempt at speed.
"""
import torch
import torch.nn as nn

ARCHS = {  # tokenizer C, conv blocks, blocks, dims, mlp ratios
    'small': (64, 2, (2, 4, 2), (128, 256, 512), (2, 2, 2)),
    'medium': (64, 3, (3, 6, 3), (128, 256, 512), (3, 3, 3)),
    'large': (96, 3, (4, 8, 3), (192, 384, 768), (3, 3, 3)),
}


def conv_bn_relu(cin, cout, k, stride=1):
    return [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ConvTokenizer(nn.Module):

    def __init__(self, dim):
        super().__init__()
        self.block = nn.Sequential(
            *conv_bn_relu(3, dim // 2, 3, 2), *conv_bn_relu(dim // 2, dim // 2, 3),
            *conv_bn_relu(dim // 2, dim, 3), nn.MaxPool2d(3, 2, 1))

    def forward(self, x):
        return self.block(x)


class ConvStage(nn.Module):

    def __init__(self, num_blocks, cin, hidden, cout):
        super().__init__()
        self.conv_blocks = nn.ModuleList(
            nn.Sequential(*conv_bn_relu(cin, hidden, 1),
                          *conv_bn_relu(hidden, hidden, 3),
                          *conv_bn_relu(hidden, cin, 1))
            for _ in range(num_blocks))
        self.downsample = nn.Conv2d(cin, cout, 3, 2, 1)

    def forward(self, x):
        for block in self.conv_blocks:
            x = x + block(x)
        return self.downsample(x)


class Mlp(nn.Module):

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class DropPath(nn.Module):

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or not self.p:
            return x
        keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device) >= self.p
        return x * keep / (1 - self.p)


class Block(nn.Module):  # the authors call it ConvMLPStage

    def __init__(self, dim, ratio, drop_path):
        super().__init__()
        hidden = int(dim * ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.channel_mlp1 = Mlp(dim, hidden)
        self.norm2 = nn.LayerNorm(dim)
        self.connect = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, bias=False)
        self.connect_norm = nn.LayerNorm(dim)
        self.channel_mlp2 = Mlp(dim, hidden)
        self.drop_path = DropPath(drop_path)

    def forward(self, x):  # x: (B, H, W, C)
        x = x + self.drop_path(self.channel_mlp1(self.norm1(x)))
        x = self.connect(self.connect_norm(x).permute(0, 3, 1, 2))
        x = x.permute(0, 2, 3, 1)
        return x + self.drop_path(self.channel_mlp2(self.norm2(x)))


class ConvDownsample(nn.Module):

    def __init__(self, cin, cout):
        super().__init__()
        self.downsample = nn.Conv2d(cin, cout, 3, 2, 1)

    def forward(self, x):
        return self.downsample(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class BasicStage(nn.Module):

    def __init__(self, num_blocks, dims, ratio, downsample):
        super().__init__()
        rates = torch.linspace(0, 0.1, num_blocks).tolist()
        self.blocks = nn.ModuleList(Block(dims[0], ratio, r)
                                    for r in rates)
        self.downsample_mlp = ConvDownsample(*dims) if downsample \
            else nn.Identity()

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.downsample_mlp(x)


class ReferenceConvMLP(nn.Module):
    """The ImageNet classifier of the authors' ``src/convmlp.py``; ``arch`` is
    a released name or a tuple as in ``ARCHS``."""

    def __init__(self, arch='small', num_classes=1000):
        super().__init__()
        c, n_conv, blocks, dims, ratios = (ARCHS[arch] if isinstance(arch, str)
                                           else arch)
        self.tokenizer = ConvTokenizer(c)
        self.conv_stages = ConvStage(n_conv, c, dims[0], dims[0])
        self.stages = nn.ModuleList(
            BasicStage(blocks[i], dims[i:i + 2], ratios[i], i < 2)
            for i in range(3))
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], num_classes)

    def dense_maps(self, x):
        """The wrapper's four NCHW maps: after the tokenizer, the conv
        stage, stage 0 (with its downsampling) and stage 2."""
        x = self.tokenizer(x)
        outs = [x]
        x = self.conv_stages(x)
        outs.append(x)
        x = x.permute(0, 2, 3, 1)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i != 1:
                outs.append(x.permute(0, 3, 1, 2).contiguous())
        return outs

    def forward(self, x):
        x = self.dense_maps(x)[-1].permute(0, 2, 3, 1)
        x = self.norm(x.flatten(1, 2)).mean(dim=1)
        return self.head(x)
