package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/broker/client"
	"github.com/musterhq/muster/broker/proto"
)

// A one-shot call: the reply, or a coded error to test with errors.Is.
func ExampleClient_Call() {
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	c, err := client.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	reply, err := c.Call(ctx, "DEMO/ECHO/ECHO", []byte("hello"))
	switch {
	case errors.Is(err, proto.ErrNotRegistered):
		log.Fatal("no replica registered and no attach manager offers DEMO/ECHO/ECHO")
	case errors.Is(err, proto.ErrWaitTimeout):
		log.Fatal("no reply within 5s")
	case err != nil:
		log.Fatal(err)
	}
	fmt.Printf("%s\n", reply)
}

// A conversation: Open sends the first message, Send the next ones, End
// finishes it. The replica may end it first; Send then says why.
func ExampleClient_Open() {
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	c, err := client.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cv, first, err := c.Open(ctx, "DEMO/ECHO/ECHO", []byte("one"))
	if err != nil {
		log.Fatal(err)
	}
	defer cv.End(ctx) // frees the replica's slot; ending an ended conversation is harmless
	fmt.Printf("%s\n", first)
	for _, msg := range []string{"two", "three"} {
		reply, err := cv.Send(ctx, []byte(msg))
		if errors.Is(err, proto.ErrAfterEOC) {
			break // the replica ended the conversation with its last reply
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s\n", reply)
	}
}
