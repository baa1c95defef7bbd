// Tensors (storage, slices, reshapes, allocators) and the Module tree (names, tied parameters,
// modes), without any layer math.
#include <dspp/error.h>
#include <dspp/module.h>
#include <dspp/nn.h>
#include <dspp/tensor.h>

#include <cstdint>
#include <functional>
#include <string>

#include "catch.h"
#include "test_util.h"

namespace {

// Counts what passes through it, then hands the work to the built-in CPU allocator.
class CountingAllocator : public dspp::Allocator {
 public:
  explicit CountingAllocator(dspp::Allocator& base) : base_(base) {}
  void* allocate(size_t bytes, dspp_device device) override {
    ++allocations;
    live_bytes += static_cast<int64_t>(bytes);
    return base_.allocate(bytes, device);
  }
  void deallocate(void* ptr, size_t bytes, dspp_device device) noexcept override {
    ++deallocations;
    live_bytes -= static_cast<int64_t>(bytes);
    base_.deallocate(ptr, bytes, device);
  }
  int allocations = 0;
  int deallocations = 0;
  int64_t live_bytes = 0;

 private:
  dspp::Allocator& base_;
};

}  // namespace

TEST_CASE("tensor: dtypes, shapes, zeros, 64-byte alignment and describe") {
  CHECK(dspp::dtype_size(DSPP_F32) == 4);
  CHECK(dspp::dtype_size(DSPP_F16) == 2);
  CHECK(dspp::dtype_size(DSPP_BF16) == 2);
  CHECK(dspp::dtype_size(DSPP_I32) == 4);
  CHECK(dspp::dtype_size(DSPP_I64) == 8);
  CHECK(dspp::dtype_size(DSPP_U8) == 1);
  CHECK(std::string(dspp::dtype_name(DSPP_BF16)) == "bf16");
  CHECK(dspp::device_name(dspp::cpu_device()) == "cpu");
  CHECK(dspp::device_name(dspp_device{DSPP_DEVICE_CUDA, 3}) == "cuda:3");

  dspp::Tensor undefined;
  CHECK_FALSE(undefined.defined());
  CHECK(undefined.data() == nullptr);

  auto t = dspp::Tensor::zeros({4, 3});
  REQUIRE(t.defined());
  CHECK(t.numel() == 12);
  CHECK(t.nbytes() == 48);
  CHECK(t.dim() == 2);
  CHECK(t.size(-1) == 3);
  CHECK(t.describe() == "f32[4, 3] cpu");
  CHECK(reinterpret_cast<uintptr_t>(t.data()) % 64 == 0);
  for (int i = 0; i < 12; ++i) CHECK(t.data<float>()[i] == 0.0f);

  auto e = dspp::Tensor::empty({0, 5}, DSPP_I64);
  CHECK(e.defined());
  CHECK(e.numel() == 0);
  CHECK(e.data() != nullptr);  // even empty tensors have a real block

  auto v = t.view();
  CHECK(v.data == t.data());
  CHECK(v.dtype == DSPP_F32);
  CHECK(v.ndim == 2);
  CHECK(v.shape[0] == 4);
  CHECK(v.shape[1] == 3);
  CHECK(v.device.type == DSPP_DEVICE_CPU);
  CHECK(v.stream == nullptr);
}

TEST_CASE("tensor: slices and reshapes share storage, keep it alive, and check bounds") {
  auto flat = dspp::Tensor::zeros({10});
  auto a = flat.slice(2, {2, 3});  // elements 2..7
  CHECK(a.data<float>() == flat.data<float>() + 2);
  a.data<float>()[0] = 5.0f;
  CHECK(flat.data<float>()[2] == 5.0f);
  // A slice of a slice is relative to its base.
  auto b = a.slice(3, {3});
  CHECK(b.data<float>() == flat.data<float>() + 5);
  b.data<float>()[2] = 7.0f;
  CHECK(flat.data<float>()[7] == 7.0f);
  // zero_ on a view zeroes only the view.
  flat.data<float>()[9] = 1.0f;
  a.zero_();
  CHECK(flat.data<float>()[2] == 0.0f);
  CHECK(flat.data<float>()[9] == 1.0f);

  auto r = a.reshape({3, 2});
  CHECK(r.data() == a.data());
  CHECK(r.describe() == "f32[3, 2] cpu");

  CHECK(contains(error_of([&] { (void)flat.slice(8, {3}); }), "outside f32[10] cpu"));
  CHECK(contains(error_of([&] { (void)flat.slice(-1, {1}); }), "outside"));
  CHECK(contains(error_of([&] { (void)a.slice(5, {2}); }), "outside f32[2, 3] cpu"));
  CHECK(contains(error_of([&] { (void)a.reshape({4}); }), "cannot reshape f32[2, 3] cpu to [4]"));
  CHECK(contains(error_of([&] { (void)dspp::Tensor::empty({-1}); }), "invalid tensor shape"));
  CHECK(contains(error_of([&] {
                   (void)dspp::Tensor::empty({1, 1, 1, 1, 1, 1, 1, 1, 1});
                 }),
                 "more than 8 dimensions"));

  // The storage lives as long as any view does.
  dspp::Tensor survivor;
  {
    auto base = dspp::Tensor::zeros({4}, DSPP_I32);
    base.data<int32_t>()[3] = 42;
    survivor = base.slice(3, {1});
  }
  CHECK(survivor.data<int32_t>()[0] == 42);
}

TEST_CASE("tensor: out of host memory is a dspp::Error naming the size and the tensor") {
  std::string msg = error_of([] { (void)dspp::Tensor::empty({int64_t{1} << 60}, DSPP_U8); });
  CHECK(contains(msg, "out of host memory allocating 1152921504606846976 bytes for u8["));
  msg = error_of([] { (void)dspp::Tensor::empty({int64_t{1} << 62}, DSPP_F64); });
  CHECK(contains(msg, "too large"));
}

TEST_CASE("tensor: a device allocator can be swapped without changing Tensor") {
  CountingAllocator counting(dspp::allocator_for(DSPP_DEVICE_CPU));
  dspp::Tensor before = dspp::Tensor::zeros({8});  // from the built-in allocator
  dspp::set_allocator(DSPP_DEVICE_CPU, &counting);
  {
    auto t = dspp::Tensor::empty({16});
    auto s = t.slice(4, {4});  // views allocate nothing
    CHECK(counting.allocations == 1);
    CHECK(counting.live_bytes == 64);
  }
  CHECK(counting.deallocations == 1);
  CHECK(counting.live_bytes == 0);
  before = dspp::Tensor();  // freed by the allocator that made it, not the counting one
  CHECK(counting.deallocations == 1);
  dspp::set_allocator(DSPP_DEVICE_CPU, nullptr);  // back to the built-in one
  // No CUDA plugin loaded: CUDA tensors are a clear error, not a crash.
  CHECK(contains(error_of([] {
                   (void)dspp::Tensor::empty({2}, DSPP_F32, {DSPP_DEVICE_CUDA, 0});
                 }),
                 "no allocator for cuda tensors"));
}

namespace {

// A leaf with one parameter, and a container of leaves, for the tree tests.
class Leaf : public dspp::Module {
 public:
  explicit Leaf(int64_t n) { register_parameter("w", w, {n}); }
  std::string type_name() const override { return "Leaf"; }
  dspp::Parameter w;
};

class Tree : public dspp::Module {
 public:
  Tree() {
    a = &register_module("a", std::make_shared<Leaf>(2));
    register_parameter("own", own, {3});
  }
  std::string type_name() const override { return "Tree"; }
  template <class M>
  M& add(std::string name, std::shared_ptr<M> m) {
    return register_module(std::move(name), std::move(m));
  }
  void tie(dspp::Parameter& p) { register_tied_parameter(p); }
  Leaf* a;
  dspp::Parameter own;
};

std::vector<std::string> names_of(dspp::Module& m) {
  std::vector<std::string> out;
  for (dspp::Parameter* p : m.parameters()) out.push_back(p->name);
  return out;
}

}  // namespace

TEST_CASE("module: dotted names follow the tree, whenever a subtree is attached") {
  auto inner = std::make_shared<Tree>();
  CHECK(names_of(*inner) == std::vector<std::string>{"own", "a.w"});
  auto root = std::make_shared<Tree>();
  root->add("inner", inner);
  // Parameters registered before the attach are renamed; the order is own first, then children.
  CHECK(names_of(*root) == std::vector<std::string>{"own", "a.w", "inner.own", "inner.a.w"});
  CHECK(inner->path() == "inner");
  CHECK(inner->a->path() == "inner.a");
  CHECK(root->path().empty());
  CHECK(inner->parent() == root.get());
  CHECK(root->children().size() == 2);
  CHECK(root->direct_parameters().size() == 1);

  // Parameters get value and grad tensors, fp32 on the CPU, shaped like the parameter.
  dspp::Parameter* w = root->parameters()[1];
  CHECK(w->shape == std::vector<int64_t>{2});
  CHECK(w->value.describe() == "f32[2] cpu");
  CHECK(w->grad.describe() == "f32[2] cpu");

  // A tied parameter is reachable from the module that reads it but listed once, under its
  // owner's name.
  auto tied = std::make_shared<Tree>();
  tied->tie(root->a->w);
  root->add("tied", tied);
  CHECK(tied->direct_parameters().size() == 2);
  CHECK(tied->direct_parameters()[1]->name == "a.w");
  CHECK(root->parameters().size() == 6);

  // Misuse is refused with a message.
  CHECK(contains(error_of([&] { root->add("inner", std::make_shared<Leaf>(1)); }),
                 "already has a child 'inner'"));
  CHECK(contains(error_of([&] { root->add("x", inner); }), "already has a parent"));
  CHECK(contains(error_of([&] { root->add("a.b", std::make_shared<Leaf>(1)); }), "without dots"));
  CHECK(
      contains(error_of([&] { inner->add("loop", std::static_pointer_cast<dspp::Module>(root)); }),
               "cycle"));
}

TEST_CASE("module: train/eval is recursive, zero_grad zeroes every grad") {
  auto root = std::make_shared<Tree>();
  auto inner = std::make_shared<Tree>();
  root->add("inner", inner);
  CHECK(root->training());
  root->eval();
  CHECK_FALSE(inner->training());
  CHECK_FALSE(inner->a->training());
  root->train();
  CHECK(inner->a->training());
  for (dspp::Parameter* p : root->parameters()) p->grad.data<float>()[0] = 1.0f;
  root->zero_grad();
  for (dspp::Parameter* p : root->parameters()) CHECK(p->grad.data<float>()[0] == 0.0f);
  // A module with no forward says so.
  CHECK(contains(error_of([&] { root->forward(dspp::Tensor::zeros({1})); }),
                 "Tree (root) has no forward(x)"));
}
