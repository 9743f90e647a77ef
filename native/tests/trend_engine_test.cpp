#include "leakprobe/trend/trend_engine.h"

#include <gtest/gtest.h>

#include "leakprobe/trend/trend_stats.h"
#include "trend_series.h"

namespace leakprobe::trend {
namespace {

TEST(TrendEngineTest, Placeholder) { EXPECT_EQ(ReasonName(Reason::kGrowing), "growing"); }

}  // namespace
}  // namespace leakprobe::trend
