#include "text_format.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string_view>
#include <system_error>

namespace leakprobe::prometheus_exporter {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// Values this exact and smaller are written as integers.
constexpr double kLargestExactInteger = 9007199254740992.0;  // 2^53

void AppendInteger(std::int64_t value, std::string* out) {
  char buf[24];
  const auto result = std::to_chars(buf, buf + sizeof buf, value);
  out->append(buf, result.ptr);
}

void AppendValue(double value, std::string* out) {
  if (std::isnan(value)) {
    out->append("NaN");
  } else if (std::isinf(value)) {
    out->append(value < 0 ? "-Inf" : "+Inf");
  } else if (std::trunc(value) == value && std::fabs(value) <= kLargestExactInteger) {
    AppendInteger(static_cast<std::int64_t>(value), out);
  } else {
    char buf[32];
    const auto result = std::to_chars(buf, buf + sizeof buf, value);
    out->append(buf, result.ptr);
  }
}

// Label values: backslash, double quote and line feed escaped.
void AppendLabelValue(std::string_view value, std::string* out) {
  for (const char c : value) {
    switch (c) {
      case '\\':
        out->append("\\\\");
        break;
      case '"':
        out->append("\\\"");
        break;
      case '\n':
        out->append("\\n");
        break;
      default:
        out->push_back(c);
    }
  }
}

// HELP text: backslash and line feed escaped.
void AppendHelp(std::string_view help, std::string* out) {
  for (const char c : help) {
    if (c == '\\') {
      out->append("\\\\");
    } else if (c == '\n') {
      out->append("\\n");
    } else {
      out->push_back(c);
    }
  }
}

// "name_suffix{labels,extra="value"} ": the sample's name and labels.
void AppendHead(const MetricFamily& family, const ClientMetric& metric,
                std::string_view suffix, std::string* out,
                std::string_view extra_name = {}, std::string_view extra_value = {}) {
  out->append(family.name);
  out->append(suffix);
  if (!metric.label.empty() || !extra_name.empty()) {
    out->push_back('{');
    bool first = true;
    for (const ClientMetric::Label& label : metric.label) {
      if (!first) out->push_back(',');
      first = false;
      out->append(label.name);
      out->append("=\"");
      AppendLabelValue(label.value, out);
      out->push_back('"');
    }
    if (!extra_name.empty()) {
      if (!first) out->push_back(',');
      out->append(extra_name);
      out->append("=\"");
      out->append(extra_value);
      out->push_back('"');
    }
    out->push_back('}');
  }
  out->push_back(' ');
}

void AppendTail(const ClientMetric& metric, std::string* out) {
  if (metric.timestamp_ms != 0) {
    out->push_back(' ');
    AppendInteger(metric.timestamp_ms, out);
  }
  out->push_back('\n');
}

std::string ValueText(double value) {
  std::string text;
  AppendValue(value, &text);
  return text;
}

void AppendSample(const MetricFamily& family, const ClientMetric& metric, double value,
                  std::string* out) {
  AppendHead(family, metric, "", out);
  AppendValue(value, out);
  AppendTail(metric, out);
}

void AppendCount(const MetricFamily& family, const ClientMetric& metric,
                 std::string_view suffix, std::uint64_t count, std::string* out,
                 std::string_view extra_name = {}, std::string_view extra_value = {}) {
  AppendHead(family, metric, suffix, out, extra_name, extra_value);
  AppendValue(static_cast<double>(count), out);
  AppendTail(metric, out);
}

void AppendSummary(const MetricFamily& family, const ClientMetric& metric,
                   std::string* out) {
  AppendCount(family, metric, "_count", metric.summary.sample_count, out);
  AppendHead(family, metric, "_sum", out);
  AppendValue(metric.summary.sample_sum, out);
  AppendTail(metric, out);
  for (const ClientMetric::Quantile& q : metric.summary.quantile) {
    AppendHead(family, metric, "", out, "quantile", ValueText(q.quantile));
    AppendValue(q.value, out);
    AppendTail(metric, out);
  }
}

void AppendHistogram(const MetricFamily& family, const ClientMetric& metric,
                     std::string* out) {
  const ClientMetric::Histogram& h = metric.histogram;
  AppendCount(family, metric, "_count", h.sample_count, out);
  AppendHead(family, metric, "_sum", out);
  AppendValue(h.sample_sum, out);
  AppendTail(metric, out);
  double last = -std::numeric_limits<double>::infinity();
  for (const ClientMetric::Bucket& b : h.bucket) {
    AppendCount(family, metric, "_bucket", b.cumulative_count, out, "le",
                ValueText(b.upper_bound));
    last = b.upper_bound;
  }
  if (last != std::numeric_limits<double>::infinity()) {
    AppendCount(family, metric, "_bucket", h.sample_count, out, "le", "+Inf");
  }
}

const char* TypeName(MetricType type) {
  switch (type) {
    case MetricType::Counter:
      return "counter";
    case MetricType::Gauge:
      return "gauge";
    case MetricType::Summary:
      return "summary";
    case MetricType::Histogram:
      return "histogram";
    case MetricType::Untyped:
      break;
  }
  return "untyped";
}

}  // namespace

std::string SerializeText(const std::vector<MetricFamily>& families) {
  std::string out;
  out.reserve(16384);
  for (const MetricFamily& family : families) {
    if (!family.help.empty()) {
      out.append("# HELP ");
      out.append(family.name);
      out.push_back(' ');
      AppendHelp(family.help, &out);
      out.push_back('\n');
    }
    out.append("# TYPE ");
    out.append(family.name);
    out.push_back(' ');
    out.append(TypeName(family.type));
    out.push_back('\n');
    for (const ClientMetric& metric : family.metric) {
      switch (family.type) {
        case MetricType::Counter:
          AppendSample(family, metric, metric.counter.value, &out);
          break;
        case MetricType::Gauge:
          AppendSample(family, metric, metric.gauge.value, &out);
          break;
        case MetricType::Summary:
          AppendSummary(family, metric, &out);
          break;
        case MetricType::Histogram:
          AppendHistogram(family, metric, &out);
          break;
        case MetricType::Untyped:
          AppendSample(family, metric, metric.untyped.value, &out);
          break;
      }
    }
  }
  return out;
}

}  // namespace leakprobe::prometheus_exporter
