"""Layer tables the benchmark runs, copied from the papers and benchmark suites they come from.

Every case is one layer of a published network (or a DeepBench problem), so nobody can call the
shapes cherry-picked. Batch size, layout (NCHW / channels_last) and dtype are not part of a case:
run.py crosses every case with batch 1 (inference latency) and a training batch, both layouts and
every requested dtype.

`quick=True` marks the representative subset that `run.py --quick` uses (about one layer per
network and operation kind, chosen to cover 1x1 / 3x3 / large kernels, strides, depthwise,
dilation and transposed convolutions while keeping the 2-minute budget).
"""
from dataclasses import dataclass
from typing import List, Tuple


@dataclass(frozen=True)
class ConvCase:
    suite: str
    name: str
    in_channels: int
    out_channels: int
    height: int
    width: int
    kernel: Tuple[int, int]
    stride: Tuple[int, int] = (1, 1)
    padding: Tuple[int, int] = (0, 0)
    dilation: Tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = False
    quick: bool = False

    @property
    def out_size(self) -> Tuple[int, int]:
        sizes = []
        for size, k, s, p, d in zip((self.height, self.width), self.kernel, self.stride,
                                    self.padding, self.dilation):
            sizes.append((size + 2 * p - d * (k - 1) - 1) // s + 1)
        return tuple(sizes)

    def describe(self) -> str:
        k = "x".join(map(str, self.kernel))
        extra = ""
        if self.stride != (1, 1):
            extra += f" s{self.stride[0]}" if self.stride[0] == self.stride[1] else f" s{self.stride}"
        if self.dilation != (1, 1):
            extra += f" d{self.dilation[0]}"
        if self.groups != 1:
            extra += " dw" if self.groups == self.in_channels else f" g{self.groups}"
        return (f"{self.in_channels}->{self.out_channels} {k}{extra} @{self.height}x{self.width}")


@dataclass(frozen=True)
class TransposeCase:
    """A transposed convolution (conv_transpose2d); height / width are its input's, weight
    (in_channels, out_channels / groups, kH, kW)."""
    suite: str
    name: str
    in_channels: int
    out_channels: int
    height: int
    width: int
    kernel: Tuple[int, int]
    stride: Tuple[int, int] = (1, 1)
    padding: Tuple[int, int] = (0, 0)
    output_padding: Tuple[int, int] = (0, 0)
    bias: bool = False
    quick: bool = False

    @property
    def out_size(self) -> Tuple[int, int]:
        return tuple((size - 1) * s - 2 * p + (k - 1) + op + 1 for size, k, s, p, op in
                     zip((self.height, self.width), self.kernel, self.stride, self.padding,
                         self.output_padding))

    def describe(self) -> str:
        k = "x".join(map(str, self.kernel))
        extra = f" s{self.stride[0]}" if self.stride != (1, 1) else ""
        extra += f" p{self.padding[0]}" if self.padding != (0, 0) else ""
        out_h, out_w = self.out_size
        return (f"{self.in_channels}->{self.out_channels} T{k}{extra} "
                f"@{self.height}x{self.width}->{out_h}x{out_w}")


@dataclass(frozen=True)
class PoolCase:
    suite: str
    name: str
    channels: int
    height: int
    width: int
    kernel: Tuple[int, int]
    stride: Tuple[int, int]
    padding: Tuple[int, int] = (0, 0)
    ceil_mode: bool = False
    quick: bool = False

    def describe(self) -> str:
        k = "x".join(map(str, self.kernel))
        extra = f" p{self.padding[0]}" if self.padding != (0, 0) else ""
        extra += " ceil" if self.ceil_mode else ""
        return f"{self.channels}ch {k} s{self.stride[0]}{extra} @{self.height}x{self.width}"


def _conv(suite, name, cin, cout, hw, k, s=1, p=0, d=1, g=1, bias=False, quick=False):
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
    h, w = pair(hw)
    return ConvCase(suite, name, cin, cout, h, w, pair(k), pair(s), pair(p), pair(d), g, bias,
                    quick)


# ResNet-18 / ResNet-50: He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016),
# Table 1, 224x224 input; strides placed as torchvision's implementation (ResNet v1.5: the stride
# of a bottleneck sits on its 3x3 conv). Bias-free convs (BatchNorm follows).
RESNET18 = [
    _conv("resnet18", "conv1", 3, 64, 224, 7, 2, 3),
    _conv("resnet18", "layer1.conv", 64, 64, 56, 3, 1, 1, quick=True),
    _conv("resnet18", "layer2.0.conv1", 64, 128, 56, 3, 2, 1),
    _conv("resnet18", "layer2.0.downsample", 64, 128, 56, 1, 2, 0),
    _conv("resnet18", "layer2.conv", 128, 128, 28, 3, 1, 1),
    _conv("resnet18", "layer3.0.conv1", 128, 256, 28, 3, 2, 1),
    _conv("resnet18", "layer3.conv", 256, 256, 14, 3, 1, 1),
    _conv("resnet18", "layer4.0.conv1", 256, 512, 14, 3, 2, 1),
    _conv("resnet18", "layer4.conv", 512, 512, 7, 3, 1, 1),
]

RESNET50 = [
    _conv("resnet50", "layer1.conv1", 64, 64, 56, 1),
    _conv("resnet50", "layer1.conv2", 64, 64, 56, 3, 1, 1),
    _conv("resnet50", "layer1.conv3", 64, 256, 56, 1, quick=True),
    _conv("resnet50", "layer2.0.conv1", 256, 128, 56, 1),
    _conv("resnet50", "layer2.0.conv2", 128, 128, 56, 3, 2, 1),
    _conv("resnet50", "layer2.0.downsample", 256, 512, 56, 1, 2, 0),
    _conv("resnet50", "layer3.conv1", 1024, 256, 14, 1),
    _conv("resnet50", "layer3.conv2", 256, 256, 14, 3, 1, 1),
    _conv("resnet50", "layer4.conv1", 2048, 512, 7, 1),
    _conv("resnet50", "layer4.conv2", 512, 512, 7, 3, 1, 1),
    _conv("resnet50", "layer4.conv3", 512, 2048, 7, 1),
]

# VGG-16: Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
# Recognition" (ICLR 2015), Table 1 configuration D: 3x3 stride 1 pad 1, with bias.
VGG16 = [
    _conv("vgg16", "conv1_1", 3, 64, 224, 3, 1, 1, bias=True),
    _conv("vgg16", "conv1_2", 64, 64, 224, 3, 1, 1, bias=True),
    _conv("vgg16", "conv2_2", 128, 128, 112, 3, 1, 1, bias=True),
    _conv("vgg16", "conv3_2", 256, 256, 56, 3, 1, 1, bias=True),
    _conv("vgg16", "conv4_2", 512, 512, 28, 3, 1, 1, bias=True),
    _conv("vgg16", "conv5_2", 512, 512, 14, 3, 1, 1, bias=True, quick=True),
]

# MobileNetV2: Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks"
# (CVPR 2018), Table 2 (224x224 input, expansion 6): stem, depthwise 3x3 convs (groups =
# channels) and the 1x1 expansion / projection convs around them.
MOBILENET_V2 = [
    _conv("mobilenet_v2", "stem", 3, 32, 224, 3, 2, 1),
    _conv("mobilenet_v2", "block1.dw", 32, 32, 112, 3, 1, 1, g=32, quick=True),
    _conv("mobilenet_v2", "block2.dw_s2", 96, 96, 112, 3, 2, 1, g=96),
    _conv("mobilenet_v2", "block3.expand", 24, 144, 56, 1),
    _conv("mobilenet_v2", "block3.dw", 144, 144, 56, 3, 1, 1, g=144),
    _conv("mobilenet_v2", "block3.project", 144, 24, 56, 1),
    _conv("mobilenet_v2", "block4.dw_s2", 144, 144, 56, 3, 2, 1, g=144),
    _conv("mobilenet_v2", "block8.dw", 384, 384, 14, 3, 1, 1, g=384),
    _conv("mobilenet_v2", "block14.dw_s2", 576, 576, 14, 3, 2, 1, g=576),
    _conv("mobilenet_v2", "block17.dw", 960, 960, 7, 3, 1, 1, g=960),
    _conv("mobilenet_v2", "head", 320, 1280, 7, 1),
]

# AlexNet: Krizhevsky et al., "ImageNet Classification with Deep Convolutional Neural Networks"
# (NIPS 2012), Section 3.5, in torchvision's single-tower variant (64/192/384/256/256 channels):
# the 11x11 stride-4 stem is the large-kernel case. With bias.
ALEXNET = [
    _conv("alexnet", "conv1", 3, 64, 224, 11, 4, 2, bias=True, quick=True),
    _conv("alexnet", "conv2", 64, 192, 27, 5, 1, 2, bias=True),
    _conv("alexnet", "conv3", 192, 384, 13, 3, 1, 1, bias=True),
    _conv("alexnet", "conv5", 256, 256, 13, 3, 1, 1, bias=True),
]

# DeepBench (Baidu Research), code/kernels/conv_problems.h, training set; entries are
# (W, H, C, N, K, S=filter_w, R=filter_h, pad_w, pad_h, wstride, hstride): speech (DeepSpeech,
# non-square kernels on 161 x 700 spectrograms), face recognition, GoogLeNet 5x5.
DEEPBENCH = [
    _conv("deepbench", "speech1 (700,161,1,*,32,20,5)", 1, 32, (161, 700), (5, 20), 2, 0,
          quick=True),
    _conv("deepbench", "speech2 (341,79,32,*,32,10,5)", 32, 32, (79, 341), (5, 10), 2, 0),
    _conv("deepbench", "face (240,24,16,*,32,3,3)", 16, 32, (24, 240), 3, 1, 1),
    _conv("deepbench", "speech (350,80,64,*,128,5,5)", 64, 128, (80, 350), 5, 2, 1),
    _conv("deepbench", "googlenet (28,28,192,*,32,5,5)", 192, 32, 28, 5, 1, 2),
    _conv("deepbench", "googlenet (7,7,832,*,128,5,5)", 832, 128, 7, 5, 1, 2),
]

# Dilated (atrous) convs: Chen et al., "Rethinking Atrous Convolution for Semantic Image
# Segmentation" (DeepLabv3, 2017), ResNet backbone at output stride 16 on a 513x513 crop
# (33x33 feature map): block4's 3x3 with rate 2 and the ASPP branches with rates 6, 12, 18;
# and the depthwise rate-2 conv of DeepLabv3 on MobileNetV2 (Sandler et al. 2018, Section 6.3:
# output stride 16, the last blocks atrous; 960 channels at 33x33).
DILATED = [
    _conv("dilated", "mnv2 block17.dw rate2", 960, 960, 33, 3, 1, 2, 2, g=960, quick=True),
    _conv("dilated", "block4.conv2 rate2", 512, 512, 33, 3, 1, 2, 2),
    _conv("dilated", "aspp rate6", 2048, 256, 33, 3, 1, 6, 6),
    _conv("dilated", "aspp rate12", 2048, 256, 33, 3, 1, 12, 12),
    _conv("dilated", "aspp rate18", 2048, 256, 33, 3, 1, 18, 18),
]

def _transpose(suite, name, cin, cout, hw, k, s=1, p=0, op=0, bias=False, quick=False):
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)  # noqa: E731
    h, w = pair(hw)
    return TransposeCase(suite, name, cin, cout, h, w, pair(k), pair(s), pair(p), pair(op), bias,
                         quick)


# Transposed convolutions of decoders (input sizes are the layer's input):
# - U-Net: Ronneberger et al., "U-Net: Convolutional Networks for Biomedical Image Segmentation"
#   (MICCAI 2015), Fig. 1: the four "up-conv 2x2" (stride 2, halving the channels) on the
#   572x572-input network's 28, 52, 100 and 196 maps. With bias.
# - DCGAN generator: Radford et al., "Unsupervised Representation Learning with Deep
#   Convolutional Generative Adversarial Networks" (ICLR 2016), Fig. 1 (4 -> 8 -> 16 -> 32 -> 64
#   maps, 1024 -> 512 -> 256 -> 128 -> 3 channels), with the 4x4 stride-2 padding-1 kernels of
#   pytorch/examples dcgan/main.py; bias-free (BatchNorm follows).
# - FCN-8s: Long et al., "Fully Convolutional Networks for Semantic Segmentation" (CVPR 2015),
#   the voc-fcn8s upsampling layers (21 classes, no bias): upscore2 and upscore_pool4 (4x4 s2) and
#   upscore8 (16x16 s8), on the 16, 34 and 70 maps of a 500x500 PASCAL VOC image (input padded by
#   100, as the reference net).
# - Mask R-CNN mask head: He et al., "Mask R-CNN" (ICCV 2017), Fig. 4 "deconv 2x2 s2", 256
#   channels on 14x14 RoI features, as torchvision's MaskRCNNPredictor.conv5_mask; one RoI per
#   batch element.
DECODERS = [
    _transpose("decoders", "unet up1", 1024, 512, 28, 2, 2, bias=True),
    _transpose("decoders", "unet up2", 512, 256, 52, 2, 2, bias=True, quick=True),
    _transpose("decoders", "unet up3", 256, 128, 100, 2, 2, bias=True),
    _transpose("decoders", "unet up4", 128, 64, 196, 2, 2, bias=True),
    _transpose("decoders", "dcgan conv1", 1024, 512, 4, 4, 2, 1),
    _transpose("decoders", "dcgan conv2", 512, 256, 8, 4, 2, 1, quick=True),
    _transpose("decoders", "dcgan conv3", 256, 128, 16, 4, 2, 1),
    _transpose("decoders", "dcgan conv4", 128, 3, 32, 4, 2, 1),
    _transpose("decoders", "fcn8s upscore2", 21, 21, 16, 4, 2),
    _transpose("decoders", "fcn8s upscore_pool4", 21, 21, 34, 4, 2, quick=True),
    _transpose("decoders", "fcn8s upscore8", 21, 21, 70, 16, 8),
    _transpose("decoders", "maskrcnn conv5_mask", 256, 256, 14, 2, 2, bias=True),
]

# Max pooling from the same networks: the ResNet stem (3x3 s2 p1 on 64x112x112, He et al.
# Table 1), VGG-16's 2x2 s2 pools (Simonyan & Zisserman Table 1), AlexNet's overlapping 3x3 s2
# pool (Krizhevsky et al. Section 3.4) and SqueezeNet 1.0's 3x3 s2 ceil_mode pools (Iandola et
# al., "SqueezeNet", 2016, Table 1; ceil_mode as torchvision, 109 -> 54 -> 27 -> 13).
POOL = [
    PoolCase("pool", "resnet stem", 64, 112, 112, (3, 3), (2, 2), (1, 1), quick=True),
    PoolCase("pool", "vgg16 pool1", 64, 224, 224, (2, 2), (2, 2)),
    PoolCase("pool", "vgg16 pool3", 256, 56, 56, (2, 2), (2, 2), quick=True),
    PoolCase("pool", "vgg16 pool5", 512, 14, 14, (2, 2), (2, 2)),
    PoolCase("pool", "alexnet pool1", 64, 55, 55, (3, 3), (2, 2)),
    PoolCase("pool", "squeezenet pool1", 96, 109, 109, (3, 3), (2, 2), ceil_mode=True,
             quick=True),
    PoolCase("pool", "squeezenet pool3", 512, 27, 27, (3, 3), (2, 2), ceil_mode=True),
]

CONV_SUITES = {
    "resnet18": RESNET18,
    "resnet50": RESNET50,
    "vgg16": VGG16,
    "mobilenet_v2": MOBILENET_V2,
    "alexnet": ALEXNET,
    "deepbench": DEEPBENCH,
    "dilated": DILATED,
}
TRANSPOSE_SUITES = {"decoders": DECODERS}
POOL_SUITES = {"pool": POOL}
# "models" runs whole torchvision networks (models.py); "tiny" is a two-case suite for the tests.
TINY = [
    _conv("tiny", "3x3", 4, 8, 9, 3, 1, 1, bias=True, quick=True),
    PoolCase("tiny", "3x3 s2 ceil", 4, 9, 9, (3, 3), (2, 2), (1, 1), ceil_mode=True, quick=True),
    _transpose("tiny", "T4x4 s2", 8, 4, 5, 4, 2, 1, bias=True, quick=True),
]
# "overhead" times tiny problems, where the per-call cost is all there is (layers.overhead_ops).
ALL_SUITES = (list(CONV_SUITES) + list(TRANSPOSE_SUITES) + list(POOL_SUITES)
              + ["models", "overhead"])
HIDDEN_SUITES = ["tiny"]


def cases_for(suites: List[str], quick: bool):
    """The conv, transposed-conv and pool cases of the named suites (the quick subset when quick)."""
    cases = []
    for suite in suites:
        if suite == "tiny":
            cases += TINY
        else:
            table = (CONV_SUITES.get(suite) or TRANSPOSE_SUITES.get(suite)
                     or POOL_SUITES.get(suite) or [])
            cases += [c for c in table if c.quick or not quick]
    return cases
