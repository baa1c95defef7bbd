// Embedding: a row lookup. backward_weight scatters dy rows into the table in token order (a
// token that appears twice adds twice, always in the same order).
#include <dspp/nn.h>

#include <cstring>

#include "nn/check.h"
#include "nn/device_ops.h"

namespace dspp {

Embedding::Embedding(int64_t num_embeddings, int64_t dim, Rng& rng, float init_std) {
  if (num_embeddings <= 0 || dim <= 0) {
    nn::fail(*this, "num_embeddings and dim must be positive, got " +
                        std::to_string(num_embeddings) + " and " + std::to_string(dim));
  }
  register_parameter("weight", weight_, {num_embeddings, dim});
  rng.fill_normal(weight_.value, init_std);
}

Tensor Embedding::forward(const Tensor& ids) {
  const int64_t dim = weight_.shape[1];
  std::vector<int64_t> shape = ids.shape();
  shape.push_back(dim);
  if (nn::gpu::on_gpu(weight_.value)) {
    // Ids from the host are checked here, then copied; ids already on the device are trusted
    // (the kernel gives a zero row for one out of range).
    const std::string who = nn::where(*this);
    if (!ids.defined() || ids.dtype() != DSPP_I32 || ids.dim() < 1) {
      nn::fail(*this, "ids must be i32 with at least one dimension, got " + ids.describe());
    }
    if (!nn::gpu::on_gpu(ids)) check_ids(ids);
    Tensor idd = ids.to(weight_.value.device());
    Tensor out = Tensor::empty(shape, weight_.value.dtype(), weight_.value.device());
    const dspp_tensor_view vi = idd.view(), vw = weight_.value.view(), vo = out.view();
    nn::gpu::run(who, nn::gpu::kernels(who).embedding_forward(&vi, &vw, &vo, nullptr),
                 "embedding_forward");
    ids_ = idd;
    return out;
  }
  nn::require_host(*this, "ids", ids, DSPP_I32);
  check_ids(ids);
  const int64_t n = ids.numel();
  const int32_t* id = ids.data<int32_t>();
  Tensor out = Tensor::empty(shape);
  const float* w = weight_.value.data<float>();
  float* o = out.data<float>();
  for (int64_t i = 0; i < n; ++i) std::memcpy(o + i * dim, w + id[i] * dim, dim * sizeof(float));
  ids_ = ids;
  return out;
}

void Embedding::check_ids(const Tensor& ids) const {
  const int64_t num = weight_.shape[0];
  const int32_t* id = ids.data<int32_t>();
  for (int64_t i = 0, n = ids.numel(); i < n; ++i) {
    if (id[i] < 0 || id[i] >= num) {
      nn::fail(*this, "id " + std::to_string(id[i]) + " at position " + std::to_string(i) +
                          " is outside [0, " + std::to_string(num) + ")");
    }
  }
}

Tensor Embedding::backward_input(const Tensor& dy) {
  nn::require_forward(*this, ids_);
  std::vector<int64_t> shape = ids_.shape();
  shape.push_back(weight_.shape[1]);
  if (nn::gpu::on_gpu(ids_)) {
    nn::gpu::require(nn::where(*this), "dy", dy, shape, weight_.value.dtype(), ids_.device());
  } else {
    nn::require_shape(*this, "dy", dy, shape);
  }
  return Tensor();  // ids have no gradient
}

void Embedding::backward_weight(const Tensor& dy) {
  nn::require_forward(*this, ids_);
  const int64_t dim = weight_.shape[1];
  std::vector<int64_t> shape = ids_.shape();
  shape.push_back(dim);
  if (nn::gpu::on_gpu(ids_)) {
    const std::string who = nn::where(*this);
    nn::gpu::require(who, "dy", dy, shape, weight_.value.dtype(), ids_.device());
    const dspp_tensor_view vi = ids_.view(), vd = dy.view(), vg = weight_.grad.view();
    nn::gpu::run(who, nn::gpu::kernels(who).embedding_backward(&vi, &vd, &vg, nullptr),
                 "embedding_backward");
    return;
  }
  nn::require_shape(*this, "dy", dy, shape);
  const int32_t* id = ids_.data<int32_t>();
  const float* d = dy.data<float>();
  float* g = weight_.grad.data<float>();
  for (int64_t i = 0, n = ids_.numel(); i < n; ++i) {
    float* row = g + id[i] * dim;
    for (int64_t c = 0; c < dim; ++c) row[c] += d[i * dim + c];
  }
}

}  // namespace dspp
