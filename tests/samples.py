"""Sample problems per op, for the suites that iterate over them (test_registry.py forces every
CPU algorithm on each sample it applies to). Each sample names the algorithms it is there for;
tests/test_registry.py checks that every registered algorithm applies to at least one sample."""
from dataclasses import dataclass


@dataclass(frozen=True)
class ConvSample:
    n: int
    c: int
    h: int
    w: int
    k: int  # output channels
    kernel: tuple
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1
    why: str = ""

    @property
    def input_size(self):
        return (self.n, self.c, self.h, self.w)

    @property
    def weight_size(self):
        return (self.k, self.c // self.groups) + tuple(self.kernel)

    def args(self):
        return [list(self.stride), list(self.padding), list(self.dilation), self.groups]

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
]

CONV_LAYOUTS = ["contiguous", "channels_last", "strided_view"]


@dataclass(frozen=True)
class PoolSample:
    n: int
    c: int
    h: int
    w: int
    kernel: tuple
    stride: tuple
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    ceil_mode: bool = False

    def args(self):
        return [list(self.kernel), list(self.stride), list(self.padding), list(self.dilation),
                self.ceil_mode]

    def __str__(self):
        return (f"{self.n}x{self.c}x{self.h}x{self.w}-r{self.kernel}-s{self.stride}-p{self.padding}"
                f"-d{self.dilation}-ceil{int(self.ceil_mode)}")


POOL = [
    PoolSample(2, 3, 13, 37, (3, 3), (2, 2), (1, 1)),
    PoolSample(1, 20, 9, 10, (2, 2), (2, 2)),
    PoolSample(2, 5, 11, 12, (3, 2), (1, 2), (1, 0), (2, 1), True),
    PoolSample(1, 200, 6, 6, (3, 3), (2, 2), (1, 1)),  # > 128 channels (AVX-512 rule)
]

POOL_LAYOUTS = ["contiguous", "channels_last", "strided_view"]
