"""The KXNet network: proxNet, K-net, X-net, stage and the unrolled model."""

from kxnet.nn.knet import KNet
from kxnet.nn.kxnet import KXNet, KXNetOutput
from kxnet.nn.proxnet import ProxNet
from kxnet.nn.stage import Stage
from kxnet.nn.xnet import XNet

__all__ = ["KNet", "KXNet", "KXNetOutput", "ProxNet", "Stage", "XNet"]
