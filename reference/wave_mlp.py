"""A straightforward Wave-MLP, written from ``docs/wave_mlp.md`` in the
authors' layout (a flat ``network`` list, the phase branches as a
concatenation of cosine and sine parts and a grouped convolution over both,
three 1x1 convolutions that read the same input) with the released
checkpoints' parameter names.

It is the equivalence oracle of the tests and the baseline of the
benchmark. ``dense_maps`` returns the four stage maps of the authors'
``fork_feat`` path before its fresh norms (``fork_norms`` adds those:
``norm0``, ``norm2``, ``norm4``, ``norm6``; ``fork_last3`` leaves out the
first, as their ``FORK_LAST3`` environment variable does). ``arch`` is a
released name or a tuple as in ``ARCHS``.
"""
import torch
import torch.nn as nn

ARCHS = {  # blocks, channels, MLP ratios, GroupNorm, depthwise theta,
    #          norms in the stem and downsamplers
    'T_dw': ((2, 2, 4, 2), (64, 128, 320, 512), (4, 4, 4, 4), False, True,
             True),
    'T': ((2, 2, 4, 2), (64, 128, 320, 512), (4, 4, 4, 4), False, False,
          True),
    'S': ((2, 3, 10, 3), (64, 128, 320, 512), (4, 4, 4, 4), True, False,
          True),
    'M': ((3, 4, 18, 3), (64, 128, 320, 512), (8, 8, 4, 4), True, False,
          False),
    'B': ((2, 2, 18, 2), (96, 192, 384, 768), (4, 4, 4, 4), True, False,
          False),
}


def make_norm(group_norm, channels):
    return nn.GroupNorm(1, channels) if group_norm else \
        nn.BatchNorm2d(channels)


class Mlp(nn.Module):

    def __init__(self, dim, hidden, out):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, out, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class PATM(nn.Module):

    def __init__(self, dim, dw_theta):
        super().__init__()
        self.fc_h = nn.Conv2d(dim, dim, 1, bias=False)
        self.fc_w = nn.Conv2d(dim, dim, 1, bias=False)
        self.fc_c = nn.Conv2d(dim, dim, 1, bias=False)
        self.tfc_h = nn.Conv2d(2 * dim, dim, (1, 7), 1, (0, 3), groups=dim,
                               bias=False)
        self.tfc_w = nn.Conv2d(2 * dim, dim, (7, 1), 1, (3, 0), groups=dim,
                               bias=False)
        self.reweight = Mlp(dim, dim // 4, dim * 3)
        self.proj = nn.Conv2d(dim, dim, 1)

        def theta():
            conv = (nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, bias=False)
                    if dw_theta else nn.Conv2d(dim, dim, 1))
            return nn.Sequential(conv, nn.BatchNorm2d(dim), nn.ReLU())

        self.theta_h_conv = theta()
        self.theta_w_conv = theta()

    def forward(self, x):
        B, C, H, W = x.shape
        theta_h = self.theta_h_conv(x)
        theta_w = self.theta_w_conv(x)
        x_h = self.fc_h(x)
        x_w = self.fc_w(x)
        x_h = torch.cat([x_h * torch.cos(theta_h), x_h * torch.sin(theta_h)],
                        dim=1)
        x_w = torch.cat([x_w * torch.cos(theta_w), x_w * torch.sin(theta_w)],
                        dim=1)
        h = self.tfc_h(x_h)
        w = self.tfc_w(x_w)
        c = self.fc_c(x)
        a = nn.functional.adaptive_avg_pool2d(h + w + c, output_size=1)
        a = self.reweight(a).reshape(B, C, 3).permute(2, 0, 1).softmax(dim=0)
        a = a.unsqueeze(-1).unsqueeze(-1)
        return self.proj(h * a[0] + w * a[1] + c * a[2])


class Block(nn.Module):

    def __init__(self, dim, ratio, group_norm, dw_theta):
        super().__init__()
        self.norm1 = make_norm(group_norm, dim)
        self.attn = PATM(dim, dw_theta)
        self.norm2 = make_norm(group_norm, dim)
        self.mlp = Mlp(dim, int(dim * ratio), dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):

    def __init__(self, cin, cout, k, stride, padding, norm):
        super().__init__()
        self.proj = nn.Conv2d(cin, cout, k, stride, padding)
        self.norm = norm

    def forward(self, x):
        return self.norm(self.proj(x))


class ReferenceWaveMLP(nn.Module):
    """The ImageNet classifier; ``dense_maps`` gives the four stages."""

    def __init__(self, arch='T', num_classes=1000, fork_norms=False,
                 fork_last3=False):
        super().__init__()
        depths, dims, ratios, group_norm, dw_theta, embed_norm = (
            ARCHS[arch] if isinstance(arch, str) else arch)

        def embed_norm_of(channels):
            return make_norm(group_norm, channels) if embed_norm else \
                nn.Identity()

        self.patch_embed = PatchEmbed(3, dims[0], 7, 4, 2,
                                      embed_norm_of(dims[0]))
        network = []
        for i in range(4):
            network.append(nn.Sequential(*(
                Block(dims[i], ratios[i], group_norm, dw_theta)
                for _ in range(depths[i]))))
            if i < 3:
                network.append(PatchEmbed(dims[i], dims[i + 1], 3, 2, 1,
                                          embed_norm_of(dims[i + 1])))
        self.network = nn.ModuleList(network)
        if fork_norms:
            for i in range(4):
                norm = (nn.Identity() if i == 0 and fork_last3 else
                        make_norm(group_norm, dims[i]))
                self.add_module(f'norm{2 * i}', norm)
        else:
            self.norm = make_norm(group_norm, dims[-1])
            self.head = nn.Linear(dims[-1], num_classes)
        self.fork_norms = fork_norms

    def dense_maps(self, x):
        x = self.patch_embed(x)
        outs = []
        for i, layer in enumerate(self.network):
            x = layer(x)
            if i % 2 == 0:
                outs.append(getattr(self, f'norm{i}')(x) if self.fork_norms
                            else x)
        return outs

    def forward(self, x):
        x = self.norm(self.dense_maps(x)[-1])
        return self.head(x.mean(dim=(2, 3)))
