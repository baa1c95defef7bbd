// Config::from_document: a config from an in-memory RapidJSON value.
//
// Kept out of <dspp/config.h> so that only hosts that already use RapidJSON include it. The value
// crosses into libdspp as JSON text, not as a RapidJSON object, so the host's RapidJSON version
// and allocator need not match the one libdspp was built with; a config is small and this costs
// microseconds. Every rule of text loading applies (duplicate keys in the value are refused).
#ifndef DSPP_CONFIG_RAPIDJSON_H
#define DSPP_CONFIG_RAPIDJSON_H

#include <dspp/config.h>

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <string>

namespace dspp {

template <class JsonValue>
Config Config::from_document(const JsonValue& doc, const LoadOptions& opts, std::string origin) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  // The writer refuses NaN and Infinity (no JSON spelling), as text loading does.
  if (!doc.Accept(writer)) {
    throw Error(Errc::kConfig, origin +
                                   ": the document holds a value JSON cannot express (NaN or "
                                   "Infinity)");
  }
  return from_string(std::string_view(buffer.GetString(), buffer.GetSize()), opts,
                     std::move(origin));
}

}  // namespace dspp

#endif  // DSPP_CONFIG_RAPIDJSON_H
