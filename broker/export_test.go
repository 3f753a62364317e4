package broker

// LoopRequests is how many requests b's event loop has served.
func LoopRequests(b *Broker) uint64 {
	if b.loop == nil {
		return 0
	}
	return b.loop.requests.Load()
}
