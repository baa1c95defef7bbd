// Sequential: its backward is its children's, in reverse.
#include <dspp/nn.h>

namespace dspp {

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (Module* c : children()) h = forward_child(*c, h);
  return h;
}

Tensor Sequential::backward_input(const Tensor& dy) {
  Tensor d = dy;
  std::vector<Module*> layers = children();
  for (auto c = layers.rbegin(); c != layers.rend(); ++c) d = backward_child(**c, d);
  return d;
}

}  // namespace dspp
