internal import CMultiServer
func probe() -> Int32 { MS_EHANDSHAKE.rawValue }
