// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of TFRecord framing in
// TensorBoard event files. x86-64 CPUs with SSE4.2 compute it with the crc32 instruction; others
// use a slicing-by-8 table.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dspp {

// The CRC-32C of `size` bytes. `seed` is the CRC of the bytes before them, so a buffer can be
// checksummed in pieces: crc32c(b, nb, crc32c(a, na)) == crc32c(a+b, na+nb). crc32c("123456789")
// is 0xE3069283.
uint32_t crc32c(const void* data, size_t size, uint32_t seed = 0);

namespace detail {
// The table path, whatever the CPU (tests compare it with the hardware path).
uint32_t crc32c_portable(const void* data, size_t size, uint32_t seed);
}  // namespace detail

}  // namespace dspp
