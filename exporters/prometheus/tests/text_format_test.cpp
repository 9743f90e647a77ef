#include "../src/text_format.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "leakprobe/prometheus/collector.h"
#include "leakprobe/snapshot.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"
#include "prometheus/summary.h"
#include "prometheus/text_serializer.h"

namespace leakprobe::prometheus_exporter {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

// Our text and prometheus-cpp's must be the same line for line, the numbers
// read back as the same doubles.
void ExpectSameAsTextSerializer(const std::vector<MetricFamily>& families) {
  const std::vector<std::string> ours = Lines(SerializeText(families));
  const std::vector<std::string> theirs =
      Lines(prometheus::TextSerializer().Serialize(families));
  ASSERT_EQ(ours.size(), theirs.size()) << SerializeText(families);
  for (std::size_t i = 0; i < ours.size(); ++i) {
    if (theirs[i].rfind('#', 0) == 0) {
      EXPECT_EQ(ours[i], theirs[i]);
      continue;
    }
    const std::size_t a = ours[i].rfind(' ');
    const std::size_t b = theirs[i].rfind(' ');
    ASSERT_NE(a, std::string::npos) << ours[i];
    ASSERT_NE(b, std::string::npos) << theirs[i];
    EXPECT_EQ(ours[i].substr(0, a), theirs[i].substr(0, b));
    const double x = std::strtod(ours[i].c_str() + a + 1, nullptr);
    const double y = std::strtod(theirs[i].c_str() + b + 1, nullptr);
    if (std::isnan(y)) {
      EXPECT_TRUE(std::isnan(x)) << ours[i];
    } else {
      EXPECT_EQ(x, y) << ours[i] << " | " << theirs[i];
    }
  }
}

MetricFamily Family(const std::string& name, const std::string& help, MetricType type) {
  MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  return family;
}

TEST(TextFormatTest, SameSamplesAsTextSerializerForEveryValueShape) {
  MetricFamily gauge = Family("g", "A gauge.", MetricType::Gauge);
  const double values[] = {0.0,
                           -0.0,
                           1.0,
                           -3.0,
                           0.1,
                           1.0 / 3.0,
                           1e6,
                           123456789012.0,
                           1732912345.671,
                           1e-9,
                           9007199254740993.0,
                           1e300,
                           std::numeric_limits<double>::infinity(),
                           -std::numeric_limits<double>::infinity(),
                           std::nan("")};
  int n = 0;
  for (const double v : values) {
    ClientMetric m;
    m.label = {{"i", std::to_string(n++)}, {"path", "a\\b \"c\"\nd"}};
    m.gauge.value = v;
    gauge.metric.push_back(m);
  }
  MetricFamily counter = Family("c_total", "", MetricType::Counter);
  ClientMetric c;
  c.counter.value = 42;
  c.timestamp_ms = 1700000000123;
  counter.metric.push_back(c);
  MetricFamily untyped = Family("u", "Untyped.", MetricType::Untyped);
  ClientMetric u;
  u.untyped.value = 2.5;
  untyped.metric.push_back(u);
  MetricFamily histogram = Family("h", "A histogram.", MetricType::Histogram);
  ClientMetric h;
  h.label = {{"k", "v"}};
  h.histogram.sample_count = 7;
  h.histogram.sample_sum = 12.25;
  h.histogram.bucket = {{2, 0.5}, {5, 1.0}, {7, 2.5}};
  histogram.metric.push_back(h);
  ExpectSameAsTextSerializer({gauge, counter, untyped, histogram});
}

TEST(TextFormatTest, SameAsTextSerializerForTheExportersFamilies) {
  // What a scrape serves: the exposer_* families (with a summary) and the
  // collector's, from the real snapshot and from a fuller fake one.
  prometheus::Registry registry;
  prometheus::BuildCounter()
      .Name("exposer_scrapes_total")
      .Help("Scrapes.")
      .Register(registry)
      .Add({})
      .Increment(3);
  auto& summary = prometheus::BuildSummary()
                      .Name("exposer_request_latencies")
                      .Help("Latency.")
                      .Register(registry)
                      .Add({}, prometheus::Summary::Quantiles{
                                   {0.5, 0.05}, {0.9, 0.01}, {0.99, 0.001}});
  for (int i = 1; i <= 100; ++i) summary.Observe(i * 1.5);
  std::vector<MetricFamily> families = registry.Collect();
  for (MetricFamily& f : BuildFamilies(TakeSnapshot())) families.push_back(std::move(f));
  ExpectSameAsTextSerializer(families);
}

TEST(TextFormatTest, HelpEscapesBackslashAndLineFeed) {
  // As the format requires (TextSerializer writes help text as is, which a
  // line feed would break; no help of ours has either character).
  EXPECT_EQ(SerializeText({Family("g", "a\\b\nc", MetricType::Gauge)}),
            "# HELP g a\\\\b\\nc\n# TYPE g gauge\n");
}

TEST(TextFormatTest, IntegersAreWrittenWholeAndOthersShortest) {
  MetricFamily gauge = Family("g", "", MetricType::Gauge);
  for (const double v : {1e6, 0.1, -2.0, 1732912345.5}) {
    ClientMetric m;
    m.gauge.value = v;
    gauge.metric.push_back(m);
  }
  EXPECT_EQ(SerializeText({gauge}),
            "# TYPE g gauge\ng 1000000\ng 0.1\ng -2\ng 1732912345.5\n");
}

}  // namespace
}  // namespace leakprobe::prometheus_exporter
