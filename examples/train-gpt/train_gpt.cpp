// The README's example: train a small GPT on the embedded A+B=C task with a DeepSpeed config.
//   train_gpt [STEPS]
#include <dspp/device.h>
#include <dspp/initialize.h>
#include <dspp/models.h>

#include <cstdio>
#include <cstdlib>

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 200;
  dspp::use_device("auto");  // the GPU LOCAL_RANK names when there is one, else the CPU
  dspp::InitializeArgs args;
  args.model = std::make_shared<dspp::GPT>(dspp::GPTConfig{13, 64, 2, 4, 64}, /*seed=*/1);
  args.training_data = std::make_shared<dspp::AdditionTask>();  // embedded A+B=C task
  args.config = R"({"train_micro_batch_size_per_gpu": 16,
                    "optimizer": {"type": "AdamW", "params": {"lr": 3e-3}}})";
  auto [engine, optimizer, loader, lr_scheduler] = dspp::initialize(args);
  for (int step = 0; step < steps; ++step) {
    dspp::Batch batch = loader->next();
    float loss = engine->forward(batch);
    engine->backward(loss);
    engine->step();
    if (step == 0 || step + 1 == steps) std::printf("step %d loss %.4f\n", step + 1, loss);
  }
  return 0;
}
