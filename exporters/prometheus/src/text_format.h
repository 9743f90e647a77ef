// text_format.h (private) — the Prometheus text exposition format (0.0.4)
// of metric families, written straight into one string.
//
//   std::string body = SerializeText(families);
//
// The same text as prometheus::TextSerializer, line for line (HELP and TYPE
// lines, label escaping, summary quantiles, _sum and _count, histogram
// buckets), except how numbers are spelled: integral values as integers,
// others in the shortest form that reads back to the same double
// (std::to_chars), where TextSerializer prints every number through an
// iostream with 16 significant digits. That iostream formatting was about
// half of a scrape's rendering CPU (perf, docs/benchmarks.md "Scrape load").
// Thread-safety: a pure function.
#pragma once

#include <string>
#include <vector>

#include "prometheus/metric_family.h"

namespace leakprobe::prometheus_exporter {

std::string SerializeText(const std::vector<prometheus::MetricFamily>& families);

}  // namespace leakprobe::prometheus_exporter
