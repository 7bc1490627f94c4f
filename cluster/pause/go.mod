module iotpipe.local/pause

go 1.22
