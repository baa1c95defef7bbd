# fp16 loss scaling against DeepSpeed's own classes
# (scripts/precision/loss_scaler_reference.py -> tests/fixtures/loss_scaler_reference.inc).
dspp_add_test(test_loss_scaler SOURCES test_loss_scaler.cpp)
