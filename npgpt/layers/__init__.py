"""Forward/backward pairs for every layer, each `out, cache = X_forward(...)` and
`grads = X_backward(dout, cache)`.  One file per layer; docs/derivations/ has one page per file."""

from .attention import AttentionCache, attention_backward, attention_forward, causal_mask
from .attention_chunks import AttentionChunksCache, attention_chunks_backward, attention_chunks_forward
from .cross_entropy import CrossEntropyCache, cross_entropy_backward, cross_entropy_forward
from .dropout import DropoutCache, dropout_backward, dropout_forward
from .embedding import EmbeddingCache, embedding_backward, embedding_forward
from .gelu import GeluCache, gelu_backward, gelu_forward
from .layernorm import LayerNormCache, layernorm_backward, layernorm_forward
from .linear import LinearCache, linear_backward, linear_forward
from .merge_attention import MergeAttentionCache, merge_attention, merge_attention_backward, merge_attention_forward
from .merge_heads import MergeHeadsCache, merge_heads_backward, merge_heads_forward
from .mla import (
    MLA_PARAM_NAMES,
    MLACache,
    MLAConfig,
    MLAKVSlot,
    mla_backward,
    mla_forward,
    mla_param_shapes,
    mla_softmax_scale,
)
from .mla_absorbed import LatentSlot, MLAAbsorbedCache, MLAAbsorbedWeights, mla_absorb, mla_absorbed_forward
from .load_balancing_loss import LoadBalancingCache, load_balancing_loss_backward, load_balancing_loss_forward
from .mlp import MLPCache, mlp_backward, mlp_forward
from .moe import MoECache, MoESpec, moe_backward, moe_forward, moe_init_params, moe_param_shapes, moe_spec
from .moe_grouped import MoEGroupedCache, moe_grouped_backward, moe_grouped_forward
from .router_deepseek import RouterDeepseekCache, balance_bias_update, router_deepseek_backward, router_deepseek_forward
from .router_softmax_topk import RouterSoftmaxTopKCache, router_softmax_topk_backward, router_softmax_topk_forward
from .router_topk_softmax import RouterTopKSoftmaxCache, router_topk_softmax_backward, router_topk_softmax_forward
from .router_z_loss import RouterZLossCache, router_z_loss_backward, router_z_loss_forward
from .sdpa import SdpaCache, SdpaGrads, sdpa_backward, sdpa_forward
from .sdpa_qkv import SdpaQkvCache, SdpaQkvGrads, sdpa_qkv_backward, sdpa_qkv_forward
from .sdpa_tiled import SdpaTiledCache, sdpa_tiled_backward, sdpa_tiled_forward
from .self_attention import KVSlot, SelfAttentionCache, self_attention_backward, self_attention_forward
from .softcap import SoftcapCache, softcap_backward, softcap_forward
from .softmax import SoftmaxCache, softmax_backward, softmax_forward
from .split_heads import SplitHeadsCache, split_heads_backward, split_heads_forward
from .gated_mlp import GatedMLPCache, gated_mlp_backward, gated_mlp_forward
from .repeat_kv import RepeatKVCache, repeat_kv_backward, repeat_kv_forward
from .rmsnorm import RMSNormCache, rmsnorm_backward, rmsnorm_forward
from .registry import PAIRS, Pair
from .rope import RopeCache, rope_backward, rope_forward, rope_inv_freq, rope_tables
from .swiglu import SwiGLUCache, swiglu_backward, swiglu_forward

__all__ = [
    "PAIRS", "Pair",
    "embedding_forward", "embedding_backward", "EmbeddingCache",
    "linear_forward", "linear_backward", "LinearCache",
    "layernorm_forward", "layernorm_backward", "LayerNormCache",
    "gelu_forward", "gelu_backward", "GeluCache",
    "softmax_forward", "softmax_backward", "SoftmaxCache",
    "attention_forward", "attention_backward", "AttentionCache", "causal_mask",
    "attention_chunks_forward", "attention_chunks_backward", "AttentionChunksCache",
    "split_heads_forward", "split_heads_backward", "SplitHeadsCache",
    "merge_heads_forward", "merge_heads_backward", "MergeHeadsCache",
    "dropout_forward", "dropout_backward", "DropoutCache",
    "cross_entropy_forward", "cross_entropy_backward", "CrossEntropyCache",
    "mlp_forward", "mlp_backward", "MLPCache",
    "self_attention_forward", "self_attention_backward", "SelfAttentionCache", "KVSlot",
    "rmsnorm_forward", "rmsnorm_backward", "RMSNormCache",
    "rope_forward", "rope_backward", "RopeCache", "rope_inv_freq", "rope_tables",
    "swiglu_forward", "swiglu_backward", "SwiGLUCache",
    "gated_mlp_forward", "gated_mlp_backward", "GatedMLPCache",
    "repeat_kv_forward", "repeat_kv_backward", "RepeatKVCache",
    "sdpa_forward", "sdpa_backward", "SdpaCache", "SdpaGrads",
    "sdpa_tiled_forward", "sdpa_tiled_backward", "SdpaTiledCache",
    "merge_attention_forward", "merge_attention_backward", "MergeAttentionCache", "merge_attention",
    "sdpa_qkv_forward", "sdpa_qkv_backward", "SdpaQkvCache", "SdpaQkvGrads",
    "mla_forward", "mla_backward", "MLACache", "MLAConfig", "MLAKVSlot", "MLA_PARAM_NAMES", "mla_param_shapes",
    "mla_softmax_scale",
    "mla_absorbed_forward", "MLAAbsorbedCache", "MLAAbsorbedWeights", "LatentSlot", "mla_absorb",
    "softcap_forward", "softcap_backward", "SoftcapCache",
    "router_softmax_topk_forward", "router_softmax_topk_backward", "RouterSoftmaxTopKCache",
    "router_topk_softmax_forward", "router_topk_softmax_backward", "RouterTopKSoftmaxCache",
    "router_deepseek_forward", "router_deepseek_backward", "RouterDeepseekCache", "balance_bias_update",
    "moe_forward", "moe_backward", "MoECache", "MoESpec", "moe_spec", "moe_param_shapes", "moe_init_params",
    "moe_grouped_forward", "moe_grouped_backward", "MoEGroupedCache",
    "load_balancing_loss_forward", "load_balancing_loss_backward", "LoadBalancingCache",
    "router_z_loss_forward", "router_z_loss_backward", "RouterZLossCache",
]
