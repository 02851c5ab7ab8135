// promtool-rules: the two `promtool` commands the tests use, `check rules` and `test rules`,
// without the rest of promtool (service discovery for every cloud, TSDB tooling, the config
// checker), which is what made promtool the slowest binary of a cold CI build.
//
// `test rules` is promtool's own code: tools/testbin/build.sh copies cmd/promtool/unittest.go
// verbatim from the pinned github.com/prometheus/prometheus module next to this file and
// calls RulesUnitTest with the options promtool passes. `check rules` is promtool's
// checkRules/checkRuleGroups/checkDuplicates (cmd/promtool/main.go, same version), with the
// `duplicate-rules` lint on (promtool's default) and fatal.
//
// Copyright The Prometheus Authors; the parts taken from cmd/promtool are under the Apache
// License 2.0 (https://github.com/prometheus/prometheus/blob/main/LICENSE).
package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/common/promslog"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"
	"github.com/prometheus/prometheus/rules"
)

var logger = promslog.New(&promslog.Config{})

// What unittest.go expects from the rest of package main (cmd/promtool/main.go and query.go).
const (
	successExitCode = 0
	failureExitCode = 1
)

func parseTime(s string) (time.Time, error) {
	if t, err := strconv.ParseFloat(s, 64); err == nil {
		s, ns := math.Modf(t)
		return time.Unix(int64(s), int64(ns*float64(time.Second))).UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("cannot parse %q to a valid timestamp", s)
}

const usage = "usage: promtool-rules check rules FILE... | promtool-rules test rules FILE..."

func main() {
	if len(os.Args) < 4 || os.Args[2] != "rules" {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	p := parser.NewParser(parser.Options{})
	files := os.Args[3:]
	switch os.Args[1] {
	case "check":
		os.Exit(checkRules(p, files))
	case "test":
		os.Exit(RulesUnitTest(
			promqltest.LazyLoaderOpts{EnableAtModifier: true, EnableNegativeOffset: true},
			p, nil, false, false, false, files...,
		))
	default:
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
}

func checkRules(p parser.Parser, files []string) int {
	failed := false
	for _, f := range files {
		fmt.Println("Checking", f)
		rgs, errs := rulefmt.ParseFile(f, false, model.UTF8Validation, p, logger)
		if errs == nil {
			errs = checkRuleGroups(rgs)
		}
		if errs != nil {
			failed = true
			fmt.Fprintln(os.Stderr, "  FAILED:")
			for _, e := range errs {
				fmt.Fprintln(os.Stderr, e.Error())
			}
			continue
		}
		n := 0
		for _, rg := range rgs.Groups {
			n += len(rg.Rules)
		}
		fmt.Printf("  SUCCESS: %d rules found\n\n", n)
	}
	if failed {
		return failureExitCode
	}
	return successExitCode
}

func checkRuleGroups(rgs *rulefmt.RuleGroups) []error {
	duplicates := checkDuplicates(rgs.Groups)
	if len(duplicates) == 0 {
		return nil
	}
	var message strings.Builder
	fmt.Fprintf(&message, "%d duplicate rule(s) found.\n", len(duplicates))
	for _, n := range duplicates {
		fmt.Fprintf(&message, "Metric: %s\nLabel(s):\n", n.metric)
		n.label.Range(func(l labels.Label) {
			fmt.Fprintf(&message, "\t%s: %s\n", l.Name, l.Value)
		})
	}
	message.WriteString("Might cause inconsistency while recording expressions")
	return []error{errors.New(message.String())}
}

type compareRuleType struct {
	metric string
	label  labels.Labels
}

type compareRuleTypes []compareRuleType

func (c compareRuleTypes) Len() int           { return len(c) }
func (c compareRuleTypes) Swap(i, j int)      { c[i], c[j] = c[j], c[i] }
func (c compareRuleTypes) Less(i, j int) bool { return compare(c[i], c[j]) < 0 }

func compare(a, b compareRuleType) int {
	if res := strings.Compare(a.metric, b.metric); res != 0 {
		return res
	}
	return labels.Compare(a.label, b.label)
}

func checkDuplicates(groups []rulefmt.RuleGroup) []compareRuleType {
	var duplicates []compareRuleType
	var cRules compareRuleTypes
	for _, group := range groups {
		for _, rule := range group.Rules {
			metric := rule.Record
			if rule.Alert != "" {
				metric = rule.Alert
			}
			cRules = append(cRules, compareRuleType{metric: metric, label: rules.FromMaps(group.Labels, rule.Labels)})
		}
	}
	if len(cRules) < 2 {
		return duplicates
	}
	sort.Sort(cRules)
	last := cRules[0]
	for i := 1; i < len(cRules); i++ {
		if compare(last, cRules[i]) == 0 {
			if len(duplicates) == 0 || compare(last, duplicates[len(duplicates)-1]) != 0 {
				duplicates = append(duplicates, cRules[i])
			}
		}
		last = cRules[i]
	}
	return duplicates
}
