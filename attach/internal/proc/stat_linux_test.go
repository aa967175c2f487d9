package proc

import "testing"

func TestParseStat(t *testing.T) {
	rest := " 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21\n"
	for _, tc := range []struct {
		name, in string
		want     Stat
		bad      bool
	}{
		{"plain", "42 (sleep) S" + rest, Stat{State: 'S', PPID: 1, PGRP: 2, StartTicks: 987654}, false},
		{"comm with spaces and parens", "42 (a) b) (c) Z" + rest, Stat{State: 'Z', PPID: 1, PGRP: 2, StartTicks: 987654}, false},
		{"no comm", "42 sleep S" + rest, Stat{}, true},
		{"short", "42 (x) S 1 2 3", Stat{}, true},
		{"bad ticks", "42 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 x 20", Stat{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStat(42, []byte(tc.in))
			if (err != nil) != tc.bad || got != tc.want {
				t.Errorf("parseStat = %+v, %v; want %+v (error %v)", got, err, tc.want, tc.bad)
			}
		})
	}
}
