"""A transcription of the RepMLPNet authors' ``repmlpnet.py``, written from
``docs/repmlp_net.md`` in their layout (fc3 as a grouped 1x1
convolution over partition rows, the Local Perceptron on the same rows) with
their parameter names.

It is the equivalence oracle of the tests and the baseline of the
benchmark. ``restore='official'`` (the default) puts the FC outputs back as
the authors' code does, which is only right when each map is one FC patch;
``restore='corrected'`` uses the true inverse of the partition. Neither pads:
as in the authors' code, maps must be multiples of the patch.
``dense_maps`` returns the four stage maps before each embedding. ``arch``
is a released name or a tuple (blocks, channels, patch sides, sharesets).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHS = {  # blocks, channels, patch side, sharesets
    'T224': ((2, 2, 6, 2), (64, 128, 256, 512), (56, 28, 14, 7),
             (1, 4, 16, 128)),
    'T256': ((2, 2, 6, 2), (64, 128, 256, 512), (64, 32, 16, 8),
             (1, 4, 16, 128)),
    'B224': ((2, 2, 12, 2), (96, 192, 384, 768), (56, 28, 14, 7),
             (1, 4, 32, 128)),
    'B256': ((2, 2, 12, 2), (96, 192, 384, 768), (64, 32, 16, 8),
             (1, 4, 32, 128)),
    'D256': ((2, 2, 18, 2), (80, 160, 320, 640), (64, 32, 16, 8),
             (1, 4, 16, 128)),
    'L256': ((2, 2, 18, 2), (96, 192, 384, 768), (64, 32, 16, 8),
             (1, 4, 32, 256)),
}


def conv_bn(cin, cout, k, stride, padding, groups=1):
    result = nn.Sequential()
    result.add_module('conv', nn.Conv2d(cin, cout, k, stride, padding,
                                        groups=groups, bias=False))
    result.add_module('bn', nn.BatchNorm2d(cout))
    return result


def conv_bn_relu(cin, cout, k, stride, padding):
    result = conv_bn(cin, cout, k, stride, padding)
    result.add_module('relu', nn.ReLU())
    return result


def fuse_bn(conv_or_fc, bn):
    std = (bn.running_var + bn.eps).sqrt()
    t = bn.weight / std
    t = t.reshape(-1, 1, 1, 1)
    if len(t) == conv_or_fc.size(0):
        return conv_or_fc * t, bn.bias - bn.running_mean * bn.weight / std
    repeat_times = conv_or_fc.size(0) // len(t)
    repeated = t.repeat_interleave(repeat_times, 0)
    return conv_or_fc * repeated, (
        bn.bias - bn.running_mean * bn.weight / std).repeat_interleave(
            repeat_times, 0)


class GlobalPerceptron(nn.Module):

    def __init__(self, input_channels, internal_neurons):
        super().__init__()
        self.fc1 = nn.Conv2d(input_channels, internal_neurons, 1, 1,
                             bias=True)
        self.fc2 = nn.Conv2d(internal_neurons, input_channels, 1, 1,
                             bias=True)
        self.input_channels = input_channels

    def forward(self, inputs):
        x = F.adaptive_avg_pool2d(inputs, output_size=(1, 1))
        x = F.relu(self.fc1(x))
        x = torch.sigmoid(self.fc2(x))
        return x.view(-1, self.input_channels, 1, 1)


class RepMLPBlock(nn.Module):

    def __init__(self, in_channels, out_channels, h, w, reparam_conv_k=None,
                 globalperceptron_reduce=4, num_sharesets=1, deploy=False,
                 restore='official'):
        super().__init__()
        self.C, self.O = in_channels, out_channels
        self.S = num_sharesets
        self.h, self.w = h, w
        self.deploy = deploy
        self.restore = restore
        assert in_channels == out_channels
        self.gp = GlobalPerceptron(
            in_channels, in_channels // globalperceptron_reduce)
        self.fc3 = nn.Conv2d(self.h * self.w * num_sharesets,
                             self.h * self.w * num_sharesets, 1, 1, 0,
                             bias=deploy, groups=num_sharesets)
        self.fc3_bn = nn.Identity() if deploy else nn.BatchNorm2d(
            num_sharesets)
        self.reparam_conv_k = reparam_conv_k
        if not deploy and reparam_conv_k is not None:
            for k in reparam_conv_k:
                self.__setattr__(f'repconv{k}', conv_bn(
                    num_sharesets, num_sharesets, k, 1, k // 2,
                    groups=num_sharesets))

    def partition(self, x, h_parts, w_parts):
        x = x.reshape(-1, self.C, h_parts, self.h, w_parts, self.w)
        return x.permute(0, 2, 4, 1, 3, 5)

    def partition_affine(self, x, h_parts, w_parts):
        fc_inputs = x.reshape(-1, self.S * self.h * self.w, 1, 1)
        out = self.fc3(fc_inputs)
        out = out.reshape(-1, self.S, self.h, self.w)
        out = self.fc3_bn(out)
        return out.reshape(-1, h_parts, w_parts, self.S, self.h, self.w)

    def forward(self, inputs):
        global_vec = self.gp(inputs)
        origin_shape = inputs.size()
        h_parts = origin_shape[2] // self.h
        w_parts = origin_shape[3] // self.w
        partitions = self.partition(inputs, h_parts, w_parts)
        fc3_out = self.partition_affine(partitions, h_parts, w_parts)
        if self.reparam_conv_k is not None and not self.deploy:
            conv_inputs = partitions.reshape(-1, self.S, self.h, self.w)
            conv_out = 0
            for k in self.reparam_conv_k:
                conv_out += self.__getattr__(f'repconv{k}')(conv_inputs)
            conv_out = conv_out.view(-1, h_parts, w_parts, self.S, self.h,
                                     self.w)
            fc3_out += conv_out
        if self.restore == 'official':
            # Reads the leading index as (n * C/S) where it is (n, a, b, q).
            fc3_out = fc3_out.permute(0, 3, 1, 4, 2, 5)
        else:
            n = origin_shape[0]
            fc3_out = fc3_out.reshape(n, h_parts, w_parts, self.C // self.S,
                                      self.S, self.h, self.w)
            fc3_out = fc3_out.permute(0, 3, 4, 1, 5, 2, 6)
        fc3_out = fc3_out.reshape(*origin_shape)
        return fc3_out * global_vec

    def get_equivalent_fc3(self):
        fc_weight, fc_bias = fuse_bn(self.fc3.weight, self.fc3_bn)
        if self.reparam_conv_k is not None:
            largest_k = max(self.reparam_conv_k)
            largest_branch = self.__getattr__(f'repconv{largest_k}')
            total_kernel, total_bias = fuse_bn(largest_branch.conv.weight,
                                               largest_branch.bn)
            for k in self.reparam_conv_k:
                if k != largest_k:
                    k_branch = self.__getattr__(f'repconv{k}')
                    kernel, bias = fuse_bn(k_branch.conv.weight, k_branch.bn)
                    total_kernel += F.pad(kernel,
                                          [(largest_k - k) // 2] * 4)
                    total_bias += bias
            rep_weight, rep_bias = self._convert_conv_to_fc(total_kernel,
                                                            total_bias)
            final_fc3_weight = rep_weight.reshape_as(fc_weight) + fc_weight
            final_fc3_bias = rep_bias + fc_bias
        else:
            final_fc3_weight, final_fc3_bias = fc_weight, fc_bias
        return final_fc3_weight, final_fc3_bias

    def local_inject(self):
        self.deploy = True
        fc3_weight, fc3_bias = self.get_equivalent_fc3()
        if self.reparam_conv_k is not None:
            for k in self.reparam_conv_k:
                self.__delattr__(f'repconv{k}')
        self.__delattr__('fc3')
        self.__delattr__('fc3_bn')
        self.fc3 = nn.Conv2d(self.S * self.h * self.w,
                             self.S * self.h * self.w, 1, 1, 0, bias=True,
                             groups=self.S)
        self.fc3_bn = nn.Identity()
        self.fc3.weight.data = fc3_weight
        self.fc3.bias.data = fc3_bias

    def _convert_conv_to_fc(self, conv_kernel, conv_bias):
        identity = torch.eye(self.h * self.w, dtype=conv_kernel.dtype,
                             device=conv_kernel.device).repeat(
            1, self.S).reshape(self.h * self.w, self.S, self.h, self.w)
        fc_k = F.conv2d(identity, conv_kernel,
                        padding=(conv_kernel.size(2) // 2,
                                 conv_kernel.size(3) // 2), groups=self.S)
        fc_k = fc_k.reshape(self.h * self.w,
                            self.S * self.h * self.w).t()
        fc_bias = conv_bias.repeat_interleave(self.h * self.w)
        return fc_k, fc_bias


class FFNBlock(nn.Module):

    def __init__(self, in_channels, hidden_channels):
        super().__init__()
        self.ffn_fc1 = conv_bn(in_channels, hidden_channels, 1, 1, 0)
        self.ffn_fc2 = conv_bn(hidden_channels, in_channels, 1, 1, 0)
        self.act = nn.GELU()

    def forward(self, x):
        return self.ffn_fc2(self.act(self.ffn_fc1(x)))


class RepMLPNetUnit(nn.Module):

    def __init__(self, channels, h, w, reparam_conv_k, globalperceptron_reduce,
                 ffn_expand=4, num_sharesets=1, deploy=False,
                 restore='official'):
        super().__init__()
        self.repmlp_block = RepMLPBlock(
            channels, channels, h, w, reparam_conv_k, globalperceptron_reduce,
            num_sharesets, deploy, restore)
        self.ffn_block = FFNBlock(channels, channels * ffn_expand)
        self.prebn1 = nn.BatchNorm2d(channels)
        self.prebn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        y = x + self.repmlp_block(self.prebn1(x))
        return y + self.ffn_block(self.prebn2(y))


class ReferenceRepMLPNet(nn.Module):

    def __init__(self, arch='T224', num_classes=1000, deploy=False,
                 restore='official'):
        super().__init__()
        num_blocks, channels, hs, sharesets = ARCHS.get(arch, arch)
        self.conv_embedding = conv_bn_relu(3, channels[0], 4, 4, 0)
        self.stages = nn.ModuleList()
        self.embeds = nn.ModuleList()
        for i in range(4):
            self.stages.append(nn.ModuleList(
                RepMLPNetUnit(channels[i], hs[i], hs[i], (1, 3), 4, 4,
                              sharesets[i], deploy, restore)
                for _ in range(num_blocks[i])))
            if i < 3:
                self.embeds.append(conv_bn_relu(channels[i], channels[i + 1],
                                                2, 2, 0))
        self.head_norm = nn.BatchNorm2d(channels[-1])
        self.head = nn.Linear(channels[-1], num_classes)

    def dense_maps(self, x):
        x = self.conv_embedding(x)
        for i, stage in enumerate(self.stages):
            for unit in stage:
                x = unit(x)
            yield x
            if i < 3:
                x = self.embeds[i](x)

    def forward(self, x):
        x = list(self.dense_maps(x))[-1]
        x = F.adaptive_avg_pool2d(self.head_norm(x), 1)
        return self.head(x.flatten(1))

    def locality_injection(self):
        for m in self.modules():
            if hasattr(m, 'local_inject'):
                m.local_inject()
