;;; starchat-eglot.el --- The StarChat language server in Eglot  -*- lexical-binding: t -*-

;; Load it from your init file (after eglot is available):
;;
;;   (setq starchat-initialization-options            ; optional
;;         '(:starchat (:generation (:max_new_tokens 256))))
;;   (load "/path/to/starchat-lsp/editors/emacs/starchat-eglot.el")
;;
;; then `M-x eglot' in a Python buffer, select code and `M-x eglot-code-actions'.
;; Tested by tests/editors/test_emacs.py (Emacs 28.2, eglot 1.9).
;;
;; The server answers Eglot's commands at once (Eglot would block for up to 10 s on them)
;; and delivers the result later: Fix and Add docstring as an edit of the buffer, Explain,
;; Write tests and chat as a Markdown file of the conversation that the server opens with
;; window/showDocument and rewrites while the answer streams.  This file adds what older
;; Eglot lacks for that: a window/showDocument handler (Eglot 1.9 has none), auto-revert
;; for those files, and `starchat-cancel'.

;;; Code:

(require 'cl-lib)
(require 'eglot)
(require 'autorevert)

(defvar starchat-command '("starchat" "lsp")
  "How to start the StarChat language server (program and arguments).")

(defvar starchat-modes '(python-mode)
  "Major modes whose buffers Eglot connects to StarChat.
Eglot runs one server per buffer, so StarChat replaces your usual server there.")

(defvar starchat-initialization-options nil
  "The server's settings sent as initializationOptions, or nil for the defaults.
For example (:starchat (:generation (:max_new_tokens 256))).")

(defconst starchat-conversation-file-regexp
  "/conversations/[0-9a-f]\\{32\\}\\.md\\'"
  "Conversation files the server writes ($STARCHAT_DATA_DIR/conversations/ID.md).")

(defvar starchat--tokens nil
  "Progress tokens of the answers started in this Emacs, newest first.")

(add-to-list 'eglot-server-programs
             `(,starchat-modes
               . (,@starchat-command
                  ,@(when starchat-initialization-options
                      (list :initializationOptions starchat-initialization-options)))))

;; The server rewrites the file while the answer streams: follow it without prompting.
(add-to-list 'revert-without-query starchat-conversation-file-regexp)
(defun starchat--follow-conversation-file ()
  "Turn on `auto-revert-mode' in a StarChat conversation file."
  (when (and buffer-file-name
             (string-match-p starchat-conversation-file-regexp buffer-file-name))
    (auto-revert-mode 1)))
(add-hook 'find-file-hook #'starchat--follow-conversation-file)

(unless (cl-find-method #'eglot-handle-request nil '(t (eql window/showDocument)))
  ;; Eglot before 1.12 neither handles nor announces window/showDocument.
  (cl-defmethod eglot-handle-request
    (_server (_method (eql window/showDocument)) &key uri external takeFocus selection
             &allow-other-keys)
    "Show the document URI (a StarChat conversation file) in a window."
    (let ((file (and (not (eq external t)) (eglot--uri-to-path uri))))
      (if (not (and file (file-readable-p file)))
          (list :success :json-false)
        (let* ((buffer (find-file-noselect file))
               (window (if (eq takeFocus t)
                           (progn (pop-to-buffer buffer) (selected-window))
                         (display-buffer buffer))))
          (when selection
            (with-current-buffer buffer
              (goto-char (eglot--lsp-position-to-point (plist-get selection :start)))
              (when (window-live-p window)
                (set-window-point window (point)))))
          (list :success t)))))
  (cl-defmethod eglot-client-capabilities :around (_server)
    "Announce window/showDocument."
    (let* ((capabilities (cl-call-next-method))
           (window (plist-get capabilities :window)))
      (plist-put capabilities :window
                 (plist-put window :showDocument (list :support t))))))

(cl-defmethod eglot-execute-command :around (_server command _arguments)
  "Remember the progress token of a StarChat answer started in the background."
  (let ((answer (cl-call-next-method)))
    (when (and (string-prefix-p "starchat." (format "%s" command))
               (listp answer)
               (equal (plist-get answer :state) "started"))
      (push (plist-get answer :token) starchat--tokens))
    answer))

(defun starchat-cancel ()
  "Stop the StarChat answer started last (window/workDoneProgress/cancel)."
  (interactive)
  (let ((token (pop starchat--tokens)))
    (unless token
      (user-error "No StarChat answer was started"))
    (jsonrpc-notify (eglot--current-server-or-lose)
                    :window/workDoneProgress/cancel (list :token token))
    (message "StarChat: asked to stop")))

(provide 'starchat-eglot)
;;; starchat-eglot.el ends here
