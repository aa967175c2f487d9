// Command muster is Muster's command-line tool: it starts a local system
// (up), runs a broker, calls services, holds conversations, serves the
// demo services as replicas and lists what is running.
//
// Exit status: 0 on success; 1 on any error (bad usage, no connection …);
// 2 when Muster answered with a coded error, printed as
// "muster: CCCC/NNNN description"; 3 when `muster bench` missed a target.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := app().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "muster:", err)
		os.Exit(exitCode(err))
	}
}
