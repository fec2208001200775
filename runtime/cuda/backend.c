/* backend.c: the CUDA backend (backend.h), registered at start-up when this folder is built: the
 * device queries, the caching allocator and copies of device.c and alloc.c, events, the op
 * entries of gemm_cuda.c, nn_cuda.c and attention_cuda.c, the attention plan, layout selection,
 * and the destructor of layout mirrors. */
#include "cuda_attn.h"
#include "cuda_ops.h"
#include "internal.h"

static ada_status to_host(void *dst, const void *src, size_t n, int32_t dev) { return ada_cuda_memcpy(dst, src, n, 1, dev); }

static ada_status from_host(void *dst, const void *src, size_t n, int32_t dev) {
  return ada_cuda_memcpy(dst, src, n, 0, dev);
}

static const ada_backend cuda_backend = {
    .name = "cuda",
    .type = ADA_CUDA,
    .device_count = ada_cuda_device_count,
    .unavailable_reason = ada_cuda_unavailable_reason,
    .device_info = ada_cuda_device_info_get,
    .memory = ada_cuda_memory,
    .empty_cache = ada_cuda_empty_cache,
    .reset_peak = ada_cuda_reset_peak,
    .set_oom_hook = ada_cuda_set_oom_hook,
    .alloc = ada_cuda_malloc,
    .free = ada_cuda_free,
    .to_host = to_host,
    .from_host = from_host,
    .copy = ada_cuda_copy,
    .fill = ada_cuda_fill,
    .arange = ada_cuda_arange,
    .randn = ada_cuda_randn,
    .synchronize = ada_cuda_synchronize,
    .event_new = ada_cuda_event_new,
    .event_record = ada_cuda_event_record,
    .event_elapsed = ada_cuda_event_elapsed,
    .event_free = ada_cuda_event_free,
    .derived_free = ada_cuda_mirror_free,
    .ops =
        {
            .linear = ada_cuda_op_linear,
            .matmul = ada_cuda_op_matmul,
            .layernorm = ada_cuda_op_layernorm,
            .layernorm_modulate = ada_cuda_op_layernorm_modulate,
            .gated_add_layernorm_modulate = ada_cuda_op_gated_add_layernorm_modulate,
            .rmsnorm = ada_cuda_op_rmsnorm,
            .softmax = ada_cuda_op_softmax,
            .rowwise = ada_cuda_op_rowwise,
            .unary = ada_cuda_op_unary,
            .rope3d = ada_cuda_op_rope3d,
            .rmsnorm_rope3d = ada_cuda_op_rmsnorm_rope3d,
            .patchify = ada_cuda_op_patchify,
            .unpatchify = ada_cuda_op_unpatchify,
            .timestep_embedding = ada_cuda_op_timestep_embedding,
            .attention_plan = ada_cuda_attention_plan,
            .attention = ada_cuda_attention,
            .layout_select = ada_cuda_layout_select,
            .layout_recall = ada_cuda_layout_recall,
        },
};

__attribute__((constructor)) static void register_cuda(void) { (void)ada_backend_register(&cuda_backend); }
