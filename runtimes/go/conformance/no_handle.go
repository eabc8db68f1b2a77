package nohandle

func helper(msg any) any { return msg }
