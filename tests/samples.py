"""Sample problems per op: the one registry of the suites that iterate over cases.

- CONV / POOL: test_registry.py forces every CPU algorithm on each sample it applies to, in
  every layout of CONV_LAYOUTS / POOL_LAYOUTS. Each sample names the algorithms it is there for;
  test_registry.py checks that every registered algorithm applies to at least one sample.
- OPCHECK_CONV / OPCHECK_POOL: test_opcheck.py's torch.library.opcheck problems.
- CUDA_CONV / CUDA_TRANSPOSE / CUDA_POOL: the CUDA parity suites (tests/cuda_cases.py, run by
  test_cuda_emulated.py under the emulator and by test_cuda.py on a GPU); tiny, as the emulator
  runs every GPU thread as a fiber on one CPU core, yet several tiles in M, N and K, several
  wgrad splits, groups, depthwise, stride, padding, dilation, 1x1 and unbatched.
Sizes, stride, padding and dilation are kept in the form the suites pass them (an int or a
pair); args() gives the ops' pair form."""
from dataclasses import dataclass


def _pair(v):
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


@dataclass(frozen=True)
class ConvSample:
    n: int
    c: int
    h: int
    w: int
    k: int  # output channels
    kernel: tuple
    stride: object = (1, 1)  # stride, padding, dilation: an int or a pair
    padding: object = (0, 0)
    dilation: object = (1, 1)
    groups: int = 1
    why: str = ""
    bias: bool = True
    unbatched: bool = False  # input (C, H, W): n must be 1

    @property
    def input_size(self):
        return (self.c, self.h, self.w) if self.unbatched else (self.n, self.c, self.h, self.w)

    @property
    def weight_size(self):
        return (self.k, self.c // self.groups) + tuple(self.kernel)

    def args(self):
        return [_pair(self.stride), _pair(self.padding), _pair(self.dilation), self.groups]

    def __str__(self):
        return (f"{self.n}x{self.c}x{self.h}x{self.w}-k{self.k}-r{self.kernel}-s{self.stride}"
                f"-p{self.padding}-d{self.dilation}-g{self.groups}")


CONV = [
    ConvSample(2, 16, 12, 12, 32, (3, 3), padding=(1, 1), why="winograd_f4x4, gemm_im2col"),
    ConvSample(1, 16, 7, 9, 16, (3, 3), padding=(1, 0), why="winograd, partial tiles"),
    ConvSample(2, 8, 9, 11, 12, (3, 3), stride=(2, 2), padding=(1, 1), why="gemm_col2im only"),
    ConvSample(1, 6, 7, 9, 4, (2, 3), padding=(1, 0), dilation=(2, 1), groups=2,
               why="grouped, dilated"),
    ConvSample(2, 12, 5, 6, 10, (1, 1), why="1x1 (plane runs)"),
    ConvSample(2, 16, 9, 11, 16, (3, 3), padding=(1, 1), groups=16, why="depthwise_vec_flat"),
    ConvSample(2, 16, 5, 70, 16, (3, 3), padding=(1, 1), groups=16, why="depthwise_vec_planes"),
    ConvSample(2, 17, 6, 70, 17, (3, 3), stride=(2, 2), padding=(1, 1), groups=17,
               why="depthwise_vec_tiles strided"),
    ConvSample(1, 16, 10, 12, 16, (3, 5), stride=(3, 1), padding=(1, 2), dilation=(1, 2),
               groups=16, why="depthwise tiles, stride 3 rows"),
    ConvSample(2, 8, 7, 7, 16, (3, 3), padding=(1, 1), groups=8, why="depthwise multiplier 2"),
    ConvSample(2, 40, 6, 5, 40, (3, 3), padding=(1, 1), groups=40, why="depthwise 40 channels"),
    ConvSample(2, 8, 8, 10, 16, (2, 2), stride=(2, 2), why="dgrad_phases: stride == kernel"),
    ConvSample(2, 20, 22, 20, 70, (4, 4), stride=(2, 2), padding=(1, 1),
               why="dgrad_phases: 4 taps per phase, K blocks split a tap, tasks per phase"),
    ConvSample(1, 12, 9, 8, 20, (4, 4), stride=(2, 2), why="dgrad_phases: rows no tap reaches"),
    ConvSample(2, 6, 7, 7, 5, (1, 2), stride=(2, 3), why="dgrad_phases: kernel < stride"),
    ConvSample(1, 8, 10, 9, 12, (3, 2), stride=(3, 2), padding=(2, 1), groups=4,
               why="dgrad_phases: grouped, padded"),
    ConvSample(2, 6, 9, 29, 66, (3, 3), padding=(1, 1), groups=2,
               why="direct_hwc: 33 channels per group (a partial channel block), rows of 29"),
    ConvSample(1, 3, 20, 23, 40, (5, 5), stride=(2, 2), padding=(2, 2),
               why="direct_hwc: first layer (3 input channels), two channel blocks"),
    ConvSample(2, 4, 11, 13, 20, (3, 3), stride=(2, 1), padding=(2, 1), dilation=(2, 2),
               why="direct_hwc fprop: dilated, stride-2 rows"),
    ConvSample(3, 3, 500, 500, 16, (4, 4), stride=(4, 4), bias=False,
               why="direct_hwc: the padded copy in two chunks of images (a patchify stem)"),
]

CONV_LAYOUTS = ["contiguous", "channels_last", "strided_view"]


@dataclass(frozen=True)
class PoolSample:
    n: int
    c: int
    h: int
    w: int
    kernel: object  # kernel, stride (None: the kernel), padding, dilation: an int or a pair
    stride: object
    padding: object = (0, 0)
    dilation: object = (1, 1)
    ceil_mode: bool = False
    unbatched: bool = False  # input (C, H, W): n must be 1

    @property
    def input_size(self):
        return (self.c, self.h, self.w) if self.unbatched else (self.n, self.c, self.h, self.w)

    def args(self):
        return [_pair(self.kernel), _pair(self.stride), _pair(self.padding), _pair(self.dilation),
                self.ceil_mode]

    def __str__(self):
        return (f"{self.n}x{self.c}x{self.h}x{self.w}-r{self.kernel}-s{self.stride}-p{self.padding}"
                f"-d{self.dilation}-ceil{int(self.ceil_mode)}")


POOL = [
    PoolSample(2, 3, 13, 37, (3, 3), (2, 2), (1, 1)),
    PoolSample(1, 20, 9, 10, (2, 2), (2, 2)),
    PoolSample(2, 5, 11, 12, (3, 2), (1, 2), (1, 0), (2, 1), True),
    PoolSample(1, 200, 6, 6, (3, 3), (2, 2), (1, 1)),  # > 128 channels (AVX-512 rule)
    # The vector backward kernels: overlapping stride-1 windows over 24 channels (a vector tail);
    # stride > kernel (grad_input rows and columns no window reaches); enough rows for several
    # channels_last bands of grad_input rows, with ceil_mode and dilation across band edges.
    PoolSample(2, 24, 9, 11, (3, 3), (1, 1), (1, 1)),
    PoolSample(1, 17, 10, 13, (2, 2), (3, 3)),
    PoolSample(2, 40, 30, 9, (3, 3), (2, 2), (1, 1), (1, 1), True),
    PoolSample(1, 20, 23, 7, (3, 2), (2, 1), (1, 1), (2, 1), True),
    # 2x2 windows at stride 2 (the NCHW kernel that writes each element once): ceil_mode windows
    # past both edges; 35 output columns (two vectors and a tail).
    PoolSample(2, 6, 7, 9, (2, 2), (2, 2), ceil_mode=True),
    PoolSample(1, 3, 6, 70, (2, 2), (2, 2), ceil_mode=True),
]

POOL_LAYOUTS = ["contiguous", "channels_last", "strided_view"]


# ---- test_opcheck.py: every argument off its default (stride, padding, dilation, groups) ----------

OPCHECK_CONV = ConvSample(2, 4, 7, 6, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2),
                          groups=2, why="opcheck")
OPCHECK_POOL = PoolSample(2, 3, 7, 6, (3, 2), (2, 1), (1, 0), (1, 2), True)


@dataclass(frozen=True)
class TransposeSample:
    """conv_transpose2d: input (n, c, h, w), out_channels k; its forward is the dgrad kernel, its
    backward fprop and wgrad."""
    n: int
    c: int
    h: int
    w: int
    k: int
    kernel: tuple
    stride: object = 1
    padding: object = 0
    output_padding: object = 0
    dilation: object = 1
    groups: int = 1
    bias: bool = True
    unbatched: bool = False

    @property
    def input_size(self):
        return (self.c, self.h, self.w) if self.unbatched else (self.n, self.c, self.h, self.w)

    @property
    def weight_size(self):
        return (self.c, self.k // self.groups) + tuple(self.kernel)


# ---- the CUDA parity suites (tests/cuda_cases.py) -------------------------------------------------

CUDA_CONV = {
    "basic": ConvSample(2, 3, 6, 5, 4, (3, 3), 1, 1, 1, 1),
    "tiles": ConvSample(2, 5, 7, 6, 36, (3, 2), 1, (1, 0), 1, 1, why="M, N > 32, several K tiles"),
    "strided": ConvSample(1, 4, 9, 8, 6, (3, 3), 2, 1, 1, 1, bias=False),
    "dilated": ConvSample(2, 3, 9, 9, 5, (3, 2), (2, 1), (2, 1), (2, 3), 1),
    "grouped": ConvSample(2, 6, 5, 5, 4, (3, 3), 1, 1, 1, 2),
    "depthwise": ConvSample(2, 4, 6, 7, 4, (3, 3), (1, 2), 1, 1, 4),
    "depthwise_x2": ConvSample(1, 3, 7, 5, 6, (2, 3), 2, (1, 0), (1, 2), 3, bias=False),
    "pointwise": ConvSample(3, 7, 4, 4, 9, (1, 1), 1, 0, 1, 1),
    "unbatched": ConvSample(1, 3, 5, 6, 2, (2, 2), 1, 0, 1, 1, unbatched=True),
}

CUDA_TRANSPOSE = {
    "unet": TransposeSample(2, 6, 4, 5, 4, (2, 2), 2, 0, 0, 1, 1),
    "dcgan_tiles": TransposeSample(2, 5, 4, 4, 36, (4, 4), 2, 1, 0, 1, 1, bias=False),  # M, N > 32
    "output_padding": TransposeSample(1, 4, 5, 4, 6, (3, 3), (2, 3), 1, (1, 2), 1, 2),
    "output_padding_over_stride": TransposeSample(2, 2, 4, 4, 4, (2, 3), 1, 0, (2, 1), (3, 2), 2),
    "depthwise": TransposeSample(2, 4, 5, 5, 4, (3, 3), 2, 1, 1, 1, 4),
    "unbatched": TransposeSample(1, 3, 4, 5, 2, (3, 3), 2, 1, 1, 1, 1, unbatched=True),
}

# stride None: the kernel size (the functional API's default)
CUDA_POOL = {
    "basic": PoolSample(2, 3, 6, 7, 2, None, 0, 1, False),
    "overlap": PoolSample(2, 3, 7, 6, 3, 2, 1, 1, False),
    "ceil": PoolSample(1, 4, 7, 7, 3, 2, 1, 1, True),
    "dilated": PoolSample(2, 2, 9, 8, (3, 2), (2, 1), (1, 1), (2, 3), True),
    "stride1": PoolSample(1, 3, 5, 5, 3, 1, 1, 1, False),
    "unbatched": PoolSample(1, 3, 5, 6, 2, 1, 0, 1, False, unbatched=True),
}
